"""A small 16-bit RGB PNG codec (numpy + zlib).

Pillow cannot create 48-bit RGB images, so the 16-bit normal maps of the clip format are written here: one IDAT
chunk, filter type 0 on every row. The reader accepts any valid non-interlaced 16-bit RGB/RGBA PNG (all five row
filters, so files written by OpenCV or other tools load too; rows with the Average or Paeth filter decode slowly
in numpy, so such files go through OpenCV when it is installed); 8-bit files are read with Pillow.
"""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import PIL.Image

_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png16(path: str | os.PathLike, image: np.ndarray, compress_level: int = 6) -> None:
    """Write a `(H, W, 3)` uint16 array as a 16-bit RGB PNG."""
    image = np.asarray(image)
    if image.dtype != np.uint16 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"`image` must be a (H, W, 3) uint16 array, got {image.dtype} {image.shape}; convert normals with "
            "`NormalsProcessor.to_uint16` first."
        )
    height, width = image.shape[:2]
    rows = image.astype(">u2").reshape(height, width * 6 // 2).view(np.uint8).reshape(height, width * 6)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()  # filter byte 0 per row
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    with open(path, "wb") as handle:
        handle.write(_SIGNATURE)
        handle.write(_chunk(b"IHDR", header))
        handle.write(_chunk(b"IDAT", zlib.compress(raw, compress_level)))
        handle.write(_chunk(b"IEND", b""))


def _unfilter(data: np.ndarray, height: int, stride: int, bpp: int) -> np.ndarray:
    """Undo the PNG row filters; `data` holds `height` rows of `1 + stride` bytes."""
    rows = data.reshape(height, stride + 1)
    filters, rows = rows[:, 0], rows[:, 1:]
    out = np.zeros((height, stride), np.uint8)
    previous = np.zeros(stride, np.uint8)
    for r in range(height):
        row, kind = rows[r], filters[r]
        if kind == 0:
            current = row.copy()
        elif kind == 1:  # Sub: a running sum per byte lane, modulo 256
            current = np.cumsum(row.reshape(-1, bpp), axis=0, dtype=np.uint8).reshape(-1)
        elif kind == 2:  # Up
            current = row + previous
        elif kind in (3, 4):  # Average and Paeth depend on the reconstructed left neighbour: byte by byte
            current = np.zeros(stride, np.int32)
            row_i, up = row.astype(np.int32), previous.astype(np.int32)
            for i in range(stride):
                left = current[i - bpp] if i >= bpp else 0
                if kind == 3:
                    predictor = (left + up[i]) // 2
                else:
                    up_left = up[i - bpp] if i >= bpp else 0
                    p = left + up[i] - up_left
                    pa, pb, pc = abs(p - left), abs(p - up[i]), abs(p - up_left)
                    predictor = left if pa <= pb and pa <= pc else (up[i] if pb <= pc else up_left)
                current[i] = (row_i[i] + predictor) & 0xFF
            current = current.astype(np.uint8)
        else:
            raise ValueError(f"Corrupt PNG: unknown row filter {kind}.")
        out[r] = current
        previous = current
    return out


def read_png16(path: str | os.PathLike) -> np.ndarray:
    """Read a PNG as an `(H, W, C)` array: uint16 for 16-bit RGB(A) files, uint8 (via Pillow) otherwise."""
    with open(path, "rb") as handle:
        blob = handle.read()
    if blob[:8] != _SIGNATURE:
        raise ValueError(f"{os.fspath(path)!r} is not a PNG file.")
    width, height, bit_depth, color_type, _, _, interlace = struct.unpack(">IIBBBBB", blob[16:29])
    if bit_depth != 16 or color_type not in (2, 6) or interlace:
        with PIL.Image.open(path) as image:
            return np.asarray(image)
    channels = 3 if color_type == 2 else 4
    idat, offset = [], 8
    while offset < len(blob):
        (length,) = struct.unpack(">I", blob[offset : offset + 4])
        kind = blob[offset + 4 : offset + 8]
        if kind == b"IDAT":
            idat.append(blob[offset + 8 : offset + 8 + length])
        elif kind == b"IEND":
            break
        offset += 12 + length
    data = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8)
    stride = width * channels * 2
    if data.size != height * (stride + 1):
        raise ValueError(f"Corrupt PNG {os.fspath(path)!r}: {data.size} bytes of pixel data for {width}x{height}.")
    rows = data.reshape(height, stride + 1)
    if np.all(rows[:, 0] == 0):
        pixels = np.ascontiguousarray(rows[:, 1:])
    else:
        if np.any(rows[:, 0] >= 3):  # Average/Paeth rows decode byte by byte here; OpenCV is much faster if present
            decoded = _read_with_opencv(path, channels)
            if decoded is not None:
                return decoded
        pixels = _unfilter(data, height, stride, channels * 2)
    return pixels.view(">u2").reshape(height, width, channels).astype(np.uint16)


def _read_with_opencv(path, channels: int) -> np.ndarray | None:
    try:
        import cv2
    except ImportError:
        return None
    image = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.dtype != np.uint16:
        return None
    return image[..., [2, 1, 0, 3][:channels]]  # OpenCV orders channels BGR(A)
