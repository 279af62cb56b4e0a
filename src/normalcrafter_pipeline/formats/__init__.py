"""File formats shared by inference, training and evaluation: the 16-bit PNG codec and the on-disk clip format.

Nothing here imports the pipeline or the training code, so every layer above can read and write these files.
"""

from .clips import AXIS_CONVENTION, clip_num_frames, list_clips, load_clip, read_meta, write_clip
from .png16 import read_png16, write_png16

__all__ = [
    "AXIS_CONVENTION",
    "clip_num_frames",
    "list_clips",
    "load_clip",
    "read_meta",
    "read_png16",
    "write_clip",
    "write_png16",
]
