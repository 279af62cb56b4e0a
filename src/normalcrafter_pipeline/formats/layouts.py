"""Dataset roots named `LAYOUT:PATH`, opened as lists of `FrameSequence`s.

`hypersim:PATH`, `matrixcity:PATH`, `kenburns:PATH` and `rendered:PATH` read those sets as published (see each
reader's module); a bare path (or `clips:PATH`) is a folder of clip folders in our own format (`formats.clips`).
Training (`--train_data_dir`) and evaluation (`--data`) both open their roots with `open_layout`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from .clips import list_clips
from .hypersim import open_hypersim
from .kenburns import open_kenburns
from .layout_io import LayoutError
from .matrixcity import open_matrixcity
from .rendered import open_rendered
from .sequences import ClipFolderSequence, FrameSequence


def open_clip_folders(root: str | os.PathLike, with_depth: bool = False) -> list[ClipFolderSequence]:
    """The clip folders of a dataset root in our clip format (depth is read when a clip has it)."""
    del with_depth
    try:
        return [ClipFolderSequence(folder) for folder in list_clips(root)]
    except FileNotFoundError as error:
        if os.path.isdir(root):  # an existing folder that holds no clips: the wrong layout, not a missing path
            raise LayoutError(str(error)) from None
        raise


LAYOUTS: dict[str, Callable[..., list[FrameSequence]]] = {
    "clips": open_clip_folders,
    "hypersim": open_hypersim,
    "matrixcity": open_matrixcity,
    "kenburns": open_kenburns,
    "rendered": open_rendered,
}
_PREFIX = re.compile(r"^([A-Za-z][A-Za-z0-9_]+):(.*)$")


def parse_layout(spec: str | os.PathLike) -> tuple[str, str]:
    """`(layout, path)` of a root: `"hypersim:/data/hs"` -> `("hypersim", "/data/hs")`; a bare path -> `("clips",
    path)`. A prefix of two or more letters that is not a layout name is an error (one letter is a drive, `C:`)."""
    spec = os.fspath(spec)
    match = _PREFIX.match(spec)
    if match is None:
        return "clips", spec
    layout, path = match.group(1).lower(), match.group(2)
    if layout not in LAYOUTS:
        raise ValueError(
            f"Dataset root {spec!r} names the layout {match.group(1)!r}, which is not one of {sorted(LAYOUTS)}; "
            "write LAYOUT:PATH with one of those, or a bare path for a folder of clip folders."
        )
    if not path:
        raise ValueError(f"Dataset root {spec!r} has no path after '{layout}:'; write {layout}:/path/to/the/set.")
    return layout, path


def open_layout(spec: str | os.PathLike, with_depth: bool = True) -> list[FrameSequence]:
    """The sequences of the dataset root `spec` (`LAYOUT:PATH` or a bare clip-format path), in a fixed order.

    Only the file listing is read (and the small JSON files of poses); frames are decoded by `sequence.load(i)`.
    `with_depth=False` skips depth maps where a layout stores them in separate files (training reads no depth).

    Raises:
        ValueError: an unknown layout name.
        FileNotFoundError: the path does not exist, or a frame lacks a file its layout requires (named).
        LayoutError (a ValueError): the path exists but is not the named layout.
        ImportError: the layout needs an optional package (h5py for Hypersim, OpenEXR for EXR files).
    """
    layout, path = parse_layout(spec)
    return LAYOUTS[layout](path, with_depth=with_depth)
