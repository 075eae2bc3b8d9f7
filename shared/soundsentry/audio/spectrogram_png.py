"""Log-mel spectrograms as 8-bit grayscale PNGs: what Rekognition Custom Labels is trained on
(``soundsentry dataset synth`` exports them) and what the classifier's Rekognition second stage
sends it, rendered the same way in both."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import numpy.typing as npt

from soundsentry.exceptions import ConfigurationError

__all__ = ["encode_png_gray", "spectrogram_image"]

_MIN_IMAGE_PX = 64  # Rekognition Custom Labels' smallest image side


def encode_png_gray(pixels: npt.NDArray[np.uint8]) -> bytes:
    """An 8-bit grayscale PNG of ``pixels`` [shape=(height, width)], uint8, row 0 at the top.

    A minimal encoder (zlib + struct): no filter, no interlace, no ancillary chunks, so the
    bytes depend only on the pixels.
    """
    image = np.ascontiguousarray(pixels)
    if image.ndim != 2 or image.dtype != np.uint8 or 0 in image.shape:
        raise ConfigurationError(
            f"need a non-empty 2-D uint8 array, got shape {image.shape} dtype {image.dtype}"
        )
    height, width = image.shape
    raw = np.empty((height, width + 1), dtype=np.uint8)
    raw[:, 0] = 0  # filter type None for every row
    raw[:, 1:] = image

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw.tobytes(), 9))
        + chunk(b"IEND", b"")
    )


def spectrogram_image(
    log_mel_db: npt.NDArray[np.floating],
    *,
    top_db: float = 80.0,
    min_size_px: int = _MIN_IMAGE_PX,
) -> npt.NDArray[np.uint8]:
    """A log-mel spectrogram as 8-bit grayscale pixels [shape=(height, width)], uint8.

    ``log_mel_db`` [shape=(n_mels, n_frames)] is e.g. ``MelFrontEnd(MelSpec()).log_mel(audio)``.
    The loudest cell maps to 255 and ``top_db`` below it (or less) to 0; low frequencies are at
    the bottom. Each side shorter than ``min_size_px`` is stretched by repeating rows or columns
    (Rekognition Custom Labels accepts images of 64 px or more per side).
    """
    db = np.asarray(log_mel_db, dtype=np.float64)
    if db.ndim != 2 or 0 in db.shape:
        raise ConfigurationError(f"need a non-empty (n_mels, n_frames) array, got {db.shape}")
    if top_db <= 0:
        raise ConfigurationError(f"top_db must be positive, got {top_db}")
    peak = float(db.max())
    if peak <= -100.0:  # the mel floor: digital silence
        scaled = np.zeros_like(db)
    else:
        scaled = np.clip((db - (peak - top_db)) / top_db, 0.0, 1.0)
    pixels = np.round(scaled[::-1] * 255.0).astype(np.uint8)
    for axis in (0, 1):
        size = pixels.shape[axis]
        if size < min_size_px:
            pixels = np.repeat(pixels, -(-min_size_px // size), axis=axis)
    return pixels
