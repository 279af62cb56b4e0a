"""The training dataset over any dataset layout (`normalcrafter_pipeline.formats.layouts`: our clip folders,
Hypersim, MatrixCity, 3D Ken Burns, rendered sequences): clips of consecutive frames with random crops, flips and
zoom, and a batch sampler that keeps one clip length per batch."""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.utils import logging

from ..formats.layout_io import LayoutError
from ..formats.layouts import open_layout
from ..formats.sequences import FrameSequence

logger = logging.get_logger(__name__)


class NormalClipDataset(torch.utils.data.Dataset):
    """Random crops of clips of consecutive frames from one or more dataset roots, mixed with weights.

    A root is `LAYOUT:PATH` (`hypersim:`, `matrixcity:`, `kenburns:`, `rendered:`) or a bare path (a folder of clip
    folders); each is opened as `FrameSequence`s (`formats.layouts.open_layout`). Sequences shorter than
    `min_num_frames` are skipped and counted (`skipped[root]`, logged); a root left without sequences is an error.

    Items are addressed by `(sequence_index, num_frames, seed)` keys, which `ClipBatchSampler` draws so that every
    clip of a batch has the same length. Each item is a dict:

    - `pixel_values`: float32 `[F, 3, height, width]` in [0, 1];
    - `normals`: float32 `[F, 3, height, width]`, unit vectors (zeros where invalid);
    - `valid_mask`: bool `[F, 1, height, width]` (the layout's validity, and pixels with a non-unit normal).

    Frames are scaled so the crop fits (by a random extra factor up to `max_scale`), cropped at random and, with
    `random_flip`, mirrored left-right (negating the normals' x). Normals and masks are resized with nearest
    neighbours, so no normal is blended across an edge.
    """

    def __init__(
        self,
        roots: str | os.PathLike | Sequence[str | os.PathLike],
        height: int,
        width: int,
        weights: Sequence[float] | None = None,
        max_scale: float = 1.25,
        random_flip: bool = True,
        min_num_frames: int = 1,
    ):
        roots = [roots] if isinstance(roots, (str, os.PathLike)) else list(roots)
        if not roots:
            raise ValueError("`roots` is empty; pass at least one dataset root (a folder of clip folders).")
        if weights is None:
            weights = [1.0] * len(roots)
        if len(weights) != len(roots) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(
                f"`weights` {list(weights)} must give one non-negative weight per root ({len(roots)} roots) with a "
                "positive sum."
            )
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, int) or value <= 0 or value % 64:
                raise ValueError(f"`{name}` is {value!r}; training crops must be positive multiples of 64.")
        if max_scale < 1.0:
            raise ValueError(f"`max_scale` is {max_scale}; it must be >= 1 (1 disables random zoom).")
        if min_num_frames < 1:
            raise ValueError(f"`min_num_frames` is {min_num_frames}; it must be at least 1.")
        self.roots = [os.fspath(r) for r in roots]
        self.height, self.width = height, width
        self.max_scale, self.random_flip = max_scale, random_flip
        self.sequences: list[FrameSequence] = []
        self.clip_lengths: list[int] = []
        self.root_offsets = [0]
        self.skipped: dict[str, int] = {}
        for root in self.roots:
            sequences = open_layout(root, with_depth=False)
            kept = [sequence for sequence in sequences if len(sequence) >= min_num_frames]
            if not kept:
                raise LayoutError(
                    f"Dataset root {root!r}: all {len(sequences)} sequences are shorter than {min_num_frames} frames "
                    "(`min_num_frames`); lower it or drop the root."
                )
            self.skipped[root] = len(sequences) - len(kept)
            if self.skipped[root]:
                logger.warning(
                    f"Dataset root {root!r}: skipped {self.skipped[root]} of {len(sequences)} sequences shorter than "
                    f"{min_num_frames} frames."
                )
            self.sequences += kept
            self.clip_lengths += [len(sequence) for sequence in kept]
            self.root_offsets.append(len(self.sequences))
        total = float(sum(weights))
        self.root_weights = [w / total for w in weights]

    def __len__(self) -> int:
        return len(self.sequences)

    def root_of(self, clip_index: int) -> int:
        return bisect.bisect_right(self.root_offsets, clip_index) - 1

    def check_frames(self, per_root: int = 8) -> None:
        """Decode frame 0 of up to `per_root` sequences of each root (spread over it), so a file that does not
        decode or a map of the wrong size fails now, naming the file, rather than in the middle of training."""
        for r in range(len(self.roots)):
            begin, end = self.root_offsets[r], self.root_offsets[r + 1]
            for index in sorted(set(np.linspace(begin, end - 1, min(per_root, end - begin)).round().astype(int))):
                self.sequences[index].load(0)

    def load_clip(self, clip_index: int, start: int, num_frames: int) -> dict:
        """Frames `start .. start + num_frames - 1` of a sequence as a dict of `rgb` uint8 `(F, H, W, 3)`, `normal`
        float32 `(F, H, W, 3)` and `mask` bool `(F, H, W)`."""
        sequence = self.sequences[clip_index]
        records = [sequence.load(i) for i in range(start, start + num_frames)]
        sizes = {record.rgb.shape[:2] for record in records}
        if len(sizes) > 1:
            raise LayoutError(
                f"Sequence {sequence.name!r} mixes frame sizes {sorted(sizes)}; frames of a sequence share one size."
            )
        return {
            "rgb": np.stack([record.rgb for record in records]),
            "normal": np.stack([record.normal for record in records]).astype(np.float32),
            "mask": np.stack([record.valid for record in records]),
        }

    def __getitem__(self, key) -> dict:
        if isinstance(key, int):
            key = (key, self.clip_lengths[key], key)
        clip_index, num_frames, seed = key
        rng = np.random.default_rng(seed)
        length = self.clip_lengths[clip_index]
        num_frames = min(num_frames, length)
        start = int(rng.integers(0, length - num_frames + 1))
        return self.transform(self.load_clip(clip_index, start, num_frames), rng)

    def transform(self, clip: dict, rng: np.random.Generator) -> dict:
        """Scale, crop and flip one loaded clip (see the class docstring)."""
        pixels = torch.from_numpy(clip["rgb"]).permute(0, 3, 1, 2).float() / 255.0  # [F, 3, H, W]
        normals = torch.from_numpy(np.nan_to_num(clip["normal"])).permute(0, 3, 1, 2).float()  # [F, 3, H, W]
        valid = (normals.norm(dim=1, keepdim=True) - 1.0).abs() < 0.1  # [F, 1, H, W]
        if clip["mask"] is not None:
            valid &= torch.from_numpy(clip["mask"])[:, None]

        in_h, in_w = pixels.shape[-2:]
        scale = max(self.height / in_h, self.width / in_w) * float(rng.uniform(1.0, self.max_scale))
        size = (max(self.height, math.ceil(in_h * scale)), max(self.width, math.ceil(in_w * scale)))
        if size != (in_h, in_w):
            pixels = F.interpolate(pixels, size=size, mode="bilinear", antialias=True, align_corners=False)
            normals = F.interpolate(normals, size=size, mode="nearest-exact")
            valid = F.interpolate(valid.float(), size=size, mode="nearest-exact") > 0.5
        top = int(rng.integers(0, size[0] - self.height + 1))
        left = int(rng.integers(0, size[1] - self.width + 1))
        crop = (slice(None), slice(None), slice(top, top + self.height), slice(left, left + self.width))
        pixels, normals, valid = pixels[crop], normals[crop], valid[crop]
        if self.random_flip and rng.random() < 0.5:
            pixels, normals, valid = pixels.flip(-1), normals.flip(-1), valid.flip(-1)
            normals = normals * torch.tensor([-1.0, 1.0, 1.0]).view(1, 3, 1, 1)
        normals = torch.where(valid, normals / normals.norm(dim=1, keepdim=True).clamp_min(1e-6), 0.0)
        return {
            "pixel_values": pixels.clamp(0.0, 1.0).contiguous(),
            "normals": normals.contiguous(),
            "valid_mask": valid.contiguous(),
        }


class ClipBatchSampler(torch.utils.data.Sampler):
    """Batches of `(clip_index, num_frames, seed)` keys with one clip length per batch.

    The length is drawn uniformly from `[min_num_frames, max_num_frames]` for every batch (and cut to the shortest
    chosen clip, so single images mix with videos); clips are drawn with replacement, a root with probability
    proportional to its weight and then a clip of it uniformly. The sequence depends only on `seed` and the epoch
    counter, so every process of a distributed run draws the same batches (accelerate then hands each its share).
    """

    def __init__(
        self,
        dataset: NormalClipDataset,
        batch_size: int,
        num_batches: int,
        min_num_frames: int = 1,
        max_num_frames: int = 14,
        seed: int = 0,
    ):
        if not 1 <= min_num_frames <= max_num_frames:
            raise ValueError(
                f"`min_num_frames`={min_num_frames} and `max_num_frames`={max_num_frames} must satisfy "
                "1 <= min_num_frames <= max_num_frames."
            )
        if batch_size < 1 or num_batches < 1:
            raise ValueError(f"`batch_size` ({batch_size}) and `num_batches` ({num_batches}) must be positive.")
        self.dataset, self.batch_size, self.num_batches = dataset, batch_size, num_batches
        self.min_num_frames, self.max_num_frames = min_num_frames, max_num_frames
        self.seed, self.epoch = seed, 0

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        dataset = self.dataset
        for _ in range(self.num_batches):
            num_frames = int(rng.integers(self.min_num_frames, self.max_num_frames + 1))
            roots = rng.choice(len(dataset.roots), size=self.batch_size, p=dataset.root_weights)
            clips = []
            for root in roots:
                begin, end = dataset.root_offsets[root], dataset.root_offsets[root + 1]
                if end == begin:
                    raise ValueError(f"Dataset root {dataset.roots[root]!r} has a positive weight but no clips.")
                clips.append(int(rng.integers(begin, end)))
            num_frames = min([num_frames] + [dataset.clip_lengths[c] for c in clips])
            yield [(c, num_frames, int(rng.integers(0, 2**31))) for c in clips]
