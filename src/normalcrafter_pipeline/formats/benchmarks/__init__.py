"""Readers of the published normal-estimation benchmarks, and the registry that names them.

`open_benchmark("dsine:sintel", "/data/dsine_eval/sintel")` gives the set's `FrameSequence`s (`formats.sequences`):
frames decoded, masked and in our axes exactly as the set's own loader does it, every file checked before the first
frame is read. Names: `dsine:<set>` for DSINE's `dsine_eval` sets (`formats.benchmarks.dsine`), `marigold:<set>` for
Marigold's normals evaluation sets (`formats.benchmarks.marigold`), and `clips` for a folder of clips in our own
format (`formats.clips`).
"""

from __future__ import annotations

import os

from ..clips import list_clips
from ..layouts import open_layout, parse_layout
from ..sequences import ClipFolderSequence
from .dsine import DSINE_SETS, dsine_sequences
from .marigold import MARIGOLD_SETS, marigold_sequences
from .published import BenchmarkDataError, BenchmarkFrame, BenchmarkSequence

# The four sets of the NormalCrafter paper's Table 1, all from `dsine_eval`.
PAPER_BENCHMARKS = ("dsine:scannet", "dsine:sintel", "dsine:nyuv2", "dsine:ibims")
BENCHMARK_NAMES = (
    tuple(f"dsine:{name}" for name in DSINE_SETS) + tuple(f"marigold:{name}" for name in MARIGOLD_SETS) + ("clips",)
)
# The aggregation each protocol reports: pixels pooled over the dataset (DSINE) or the mean of per-image metrics.
NATIVE_AGGREGATION = {"dsine": "pooled_pixels", "marigold": "per_image_mean", "clips": "pooled_pixels"}

__all__ = [
    "BENCHMARK_NAMES",
    "NATIVE_AGGREGATION",
    "PAPER_BENCHMARKS",
    "BenchmarkDataError",
    "BenchmarkFrame",
    "BenchmarkSequence",
    "check_benchmark_name",
    "open_benchmark",
]


def check_benchmark_name(name: str) -> tuple[str, str]:
    """Split `layout:set` (or `clips`) into its parts; a name not in `BENCHMARK_NAMES` raises naming the choices."""
    if name not in BENCHMARK_NAMES:
        raise ValueError(
            f"`benchmark` must be one of {', '.join(BENCHMARK_NAMES)}, got {name!r} (OASIS under DSINE stores its "
            "ground truth as pickles, which are not read; Marigold's OASIS is `marigold:oasis`)."
        )
    layout, _, set_name = name.partition(":")
    return layout, set_name


def open_benchmark(name: str, root: str | os.PathLike, split: str | os.PathLike | None = None) -> list:
    """The `FrameSequence`s of benchmark `name` stored under `root`, checked before any frame is decoded.

    Args:
        name: one of `BENCHMARK_NAMES` (`dsine:sintel`, `marigold:nyuv2`, `clips`, ...).
        root: the set's own folder as published (for DSINE, the folder holding `<scene>/<id>_img.png`; for Marigold,
            the folder its split file is relative to; for `clips`, a folder of clip folders, or a training set as
            published named `LAYOUT:PATH` (`formats.layouts.open_layout`: `hypersim:`, `matrixcity:`, `kenburns:`,
            `rendered:`)).
        split: optional split file of the set's protocol (DSINE: `<scene>/<id>_img.png` per line; Marigold:
            `<image> <normal>` per line) to read exactly the frames it lists.

    Raises:
        ValueError: an unknown name. FileNotFoundError: `root`, an image or a ground-truth file is missing.
        BenchmarkDataError: `root` is not the named layout, or a file does not decode or differs in size from its
            image. Each message is one line naming the file.
    """
    layout, set_name = check_benchmark_name(name)
    if layout == "dsine":
        return dsine_sequences(root, set_name, split)
    if layout == "marigold":
        return marigold_sequences(root, set_name, split)
    if split is not None:
        raise ValueError("`split` applies to dsine: and marigold: benchmarks; a clips root is read whole.")
    if isinstance(root, str) and parse_layout(root)[0] != "clips":
        return open_layout(root)  # a training set as published: `hypersim:PATH`, `matrixcity:PATH`, ...
    return [ClipFolderSequence(folder) for folder in list_clips(root)]
