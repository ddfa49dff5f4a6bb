"""Decoding one picture into uint8 C x H x W pixels, and a worker that decodes a chunk into a map.

Imports neither torch nor the rest of cnnspec's data layer, so a spawned worker process starts fast.
Hostile pictures (decompression bombs, truncated files, odd modes) become a reason string, never
a crash: the caller lists them.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

MAX_IMAGE_PIXELS = 50_000_000  # a photo has tens of megapixels; more is a decompression bomb


class Unreadable(Exception):
    """A picture that cannot be decoded; the message says why."""


def decode(path: str, size: tuple[int, int], channels: int) -> tuple[np.ndarray, tuple[int, int], str]:
    """(pixels uint8 C x H x W at ``size`` = (h, w), the picture's own (w, h), its PIL mode).

    Read as torchvision's ImageFolder reads (PIL, converted to RGB, bilinear resize, greyscale by
    PIL's ``L`` conversion), so cached pixels are what the in-memory reader gave."""
    from PIL import Image, UnidentifiedImageError

    h, w = size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with open(path, "rb") as f, Image.open(f) as img:
                found, mode = (img.width, img.height), img.mode
                if img.width * img.height > MAX_IMAGE_PIXELS:
                    raise Unreadable(f"{img.width} x {img.height} pixels is more than {MAX_IMAGE_PIXELS:,}; "
                                     "refused (a decompression bomb?)")
                rgb = img.convert("RGB").resize((w, h), Image.Resampling.BILINEAR)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise Unreadable(f"refused: {e}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
        raise Unreadable(str(e) or type(e).__name__) from None
    out = rgb.convert("L") if channels == 1 else rgb
    a = np.asarray(out, dtype=np.uint8).reshape(h, w, channels)
    return np.ascontiguousarray(a.transpose(2, 0, 1)), found, mode


def decode_chunk(task: tuple[str, tuple[int, ...], list[tuple[int, str]], tuple[int, int], int]
                 ) -> list[tuple[int, str | None, Any, str]]:
    """Decode ``rows`` = [(row, path)] into the uint8 map at ``file`` (shape ``shape``, written in
    place, shared with the parent); per row: (row, why unreadable or None, picture (w, h), mode)."""
    file, shape, rows, size, channels = task
    pixels = np.memmap(file, dtype=np.uint8, mode="r+", shape=shape)
    out: list[tuple[int, str | None, Any, str]] = []
    try:
        for row, path in rows:
            try:
                a, found, mode = decode(path, size, channels)
            except Unreadable as e:
                out.append((row, str(e), None, ""))
                continue
            pixels[row] = a
            out.append((row, None, found, mode))
    finally:
        del pixels  # unmapped: the written pages stay in the page cache for the parent's fsync
    return out
