"""File formats shared by inference, training and evaluation: the 16-bit PNG codec, the on-disk clip format, and
the readers of published datasets behind `open_layout("LAYOUT:PATH")` (Hypersim, MatrixCity, 3D Ken Burns,
rendered sequences; a bare path is a folder of clip folders).

Nothing here imports the pipeline or the training code, so every layer above can read and write these files.
"""

from .clips import AXIS_CONVENTION, clip_num_frames, list_clips, load_clip, read_meta, write_clip
from .layouts import LAYOUTS, open_layout, parse_layout
from .png16 import read_png16, write_png16

__all__ = [
    "AXIS_CONVENTION",
    "LAYOUTS",
    "open_layout",
    "parse_layout",
    "clip_num_frames",
    "list_clips",
    "load_clip",
    "read_meta",
    "read_png16",
    "write_clip",
    "write_png16",
]
