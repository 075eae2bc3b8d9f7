"""Audio in: PCM chunk decoding and validation, audio files, and streaming resampling.

All audio leaves this module as mono float32 in [-1, 1] (full scale 1.0).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from soundsentry.contracts import AudioChunk, SampleFormat, time_problem
from soundsentry.exceptions import BadMessageError, ConfigurationError

__all__ = [
    "DEFAULT_LIMITS",
    "FULL_SCALE_S16",
    "ChunkError",
    "ChunkLimits",
    "StreamResampler",
    "chunk_frames",
    "decode_pcm",
    "file_blocks",
    "load_audio",
    "s16_chunks",
    "to_s16",
    "validate_chunk",
]

FULL_SCALE_S16 = 32768.0
_BYTES_PER_SAMPLE = {
    SampleFormat.SAMPLE_FORMAT_S16LE: 2,
    SampleFormat.SAMPLE_FORMAT_F32LE: 4,
}
_FORMAT_NAMES = {
    SampleFormat.SAMPLE_FORMAT_S16LE: "s16le",
    SampleFormat.SAMPLE_FORMAT_F32LE: "f32le",
}
_DTYPES: dict[int, np.dtype[Any]] = {
    SampleFormat.SAMPLE_FORMAT_S16LE: np.dtype("<i2"),
    SampleFormat.SAMPLE_FORMAT_F32LE: np.dtype("<f4"),
}


class ChunkError(BadMessageError):
    """An audio chunk that cannot be used; ``reason`` says why (stable, for metrics)."""


@dataclass(frozen=True, slots=True)
class ChunkLimits:
    """What a chunk may be: rates, channels, and size (bytes and seconds of audio)."""

    min_sample_rate_hz: int = 8_000
    max_sample_rate_hz: int = 192_000
    max_channels: int = 8
    max_chunk_seconds: float = 10.0
    # Below Kafka's default 1 MiB message limit, with room for the other fields.
    max_chunk_bytes: int = 900_000
    max_id_bytes: int = 256


DEFAULT_LIMITS = ChunkLimits()


def validate_chunk(chunk: AudioChunk, limits: ChunkLimits | None = None) -> None:
    """Check a chunk's header and payload size, without decoding samples.

    Raises
    ------
    ChunkError
        with ``reason`` one of ``missing_sensor_id``, ``bad_sensor_id``, ``missing_stream_id``,
        ``bad_stream_id``, ``bad_captured_at``, ``bad_sample_rate``, ``bad_channels``,
        ``bad_sample_format``, ``empty_pcm``, ``oversized_chunk``, ``odd_byte_count``.
    """
    limits = limits or DEFAULT_LIMITS
    _check_id("sensor_id", chunk.sensor_id, limits.max_id_bytes)
    _check_id("stream_id", chunk.stream_id, limits.max_id_bytes)
    problem = time_problem("captured_at", chunk.captured_at)
    if problem:  # a sensor's broken clock: refused at ingest, never a stage's crash later
        raise ChunkError("bad_captured_at", problem)
    rate = chunk.sample_rate_hz
    if not limits.min_sample_rate_hz <= rate <= limits.max_sample_rate_hz:
        raise ChunkError(
            "bad_sample_rate",
            f"sample_rate_hz={rate} is outside the accepted "
            f"{limits.min_sample_rate_hz}..{limits.max_sample_rate_hz} Hz",
        )
    channels = chunk.channels or 1
    if channels > limits.max_channels:
        raise ChunkError(
            "bad_channels", f"channels={channels} exceeds the maximum of {limits.max_channels}"
        )
    width = _BYTES_PER_SAMPLE.get(chunk.sample_format)
    if width is None:
        raise ChunkError(
            "bad_sample_format",
            f"sample_format={chunk.sample_format} is not SAMPLE_FORMAT_S16LE or "
            "SAMPLE_FORMAT_F32LE",
        )
    size = len(chunk.pcm)
    if size == 0:
        raise ChunkError("empty_pcm", "pcm is empty")
    if size > limits.max_chunk_bytes:
        raise ChunkError(
            "oversized_chunk",
            f"pcm is {size} bytes, more than the maximum of {limits.max_chunk_bytes}",
        )
    frame_bytes = width * channels
    if size % frame_bytes:
        raise ChunkError(
            "odd_byte_count",
            f"pcm is {size} bytes, not a whole number of {channels}-channel "
            f"{_FORMAT_NAMES[chunk.sample_format]} frames ({frame_bytes} bytes each)",
        )
    seconds = size / frame_bytes / rate
    if seconds > limits.max_chunk_seconds:
        raise ChunkError(
            "oversized_chunk",
            f"chunk holds {seconds:.2f} s of audio, more than the maximum of "
            f"{limits.max_chunk_seconds} s",
        )


def chunk_frames(chunk: AudioChunk) -> int:
    """Sample frames (per channel) in a chunk that passed :func:`validate_chunk`."""
    return len(chunk.pcm) // (_BYTES_PER_SAMPLE[chunk.sample_format] * (chunk.channels or 1))


def _check_id(name: str, value: str, max_bytes: int) -> None:
    if not value:
        raise ChunkError(f"missing_{name}", f"{name} is empty")
    size = len(value.encode("utf-8"))
    if size > max_bytes or not value.isprintable():
        raise ChunkError(
            f"bad_{name}",
            f"{name} must be at most {max_bytes} bytes of printable UTF-8 (got {size} bytes)",
        )


def decode_pcm(pcm: bytes, *, sample_format: int, channels: int = 1) -> npt.NDArray[np.float32]:
    """Decode interleaved PCM into mono float32, full scale 1.0.

    Channels are averaged (a downmix that keeps a full-scale signal on every channel at full
    scale). Call :func:`validate_chunk` first for header checks.

    Returns
    -------
    np.ndarray [shape=(len(pcm) // (width * channels),)], float32

    Raises
    ------
    ChunkError
        ``odd_byte_count`` if the bytes are not whole frames, ``non_finite_samples`` for NaN or
        infinite f32 samples, ``bad_sample_format`` for an unknown format.
    """
    dtype = _DTYPES.get(sample_format)
    if dtype is None:
        raise ChunkError("bad_sample_format", f"unknown sample_format {sample_format}")
    channels = max(channels, 1)
    if len(pcm) % (dtype.itemsize * channels):
        raise ChunkError(
            "odd_byte_count",
            f"{len(pcm)} bytes are not whole {channels}-channel frames of "
            f"{dtype.itemsize}-byte samples",
        )
    raw = np.frombuffer(pcm, dtype=dtype)
    if sample_format == SampleFormat.SAMPLE_FORMAT_S16LE:
        samples = raw.astype(np.float32)
        samples *= np.float32(1.0 / FULL_SCALE_S16)
    else:
        samples = raw.astype(np.float32)
        if not np.isfinite(samples).all():
            bad = int(np.count_nonzero(~np.isfinite(samples)))
            raise ChunkError(
                "non_finite_samples", f"{bad} of {samples.size} samples are NaN or infinite"
            )
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return samples


def to_s16(samples: npt.NDArray[np.floating]) -> npt.NDArray[np.int16]:
    """Full-scale-1.0 float audio as int16 (rounded, clipped to the int16 range)."""
    scaled = np.round(np.asarray(samples, dtype=np.float64) * FULL_SCALE_S16)
    return np.clip(scaled, -32768, 32767).astype(np.int16)


def load_audio(path: str | Path) -> tuple[npt.NDArray[np.float32], int]:
    """Read an audio file (WAV, FLAC, OGG, MP3, ... through libsndfile) as mono float32.

    Returns
    -------
    samples : np.ndarray [shape=(n,)], float32
    sample_rate_hz : int

    Raises
    ------
    ConfigurationError
        when the file is missing or not audio libsndfile can read.
    """
    import soundfile  # noqa: PLC0415 - only file-reading paths need libsndfile

    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (OSError, RuntimeError, soundfile.LibsndfileError) as exc:
        raise ConfigurationError(f"cannot read audio file {path}: {exc}") from exc
    samples: npt.NDArray[np.float32] = (
        data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    )
    return np.ascontiguousarray(samples), int(rate)


class StreamResampler:
    """soxr's streaming resampler for one stream: any chunking gives the same output samples.

    The output of all chunks together equals ``soxr.resample`` of the whole signal.
    """

    def __init__(self, *, in_rate_hz: int, out_rate_hz: int, quality: str = "HQ") -> None:
        import soxr  # noqa: PLC0415

        if in_rate_hz <= 0 or out_rate_hz <= 0:
            raise ConfigurationError(f"bad resampling rates {in_rate_hz} -> {out_rate_hz}")
        self.in_rate_hz = in_rate_hz
        self.out_rate_hz = out_rate_hz
        self._stream = soxr.ResampleStream(
            in_rate_hz, out_rate_hz, 1, dtype="float32", quality=quality
        )

    def process(
        self, samples: npt.NDArray[np.float32], *, last: bool = False
    ) -> npt.NDArray[np.float32]:
        """Resample the next piece of the stream; ``last=True`` flushes what soxr holds back."""
        out: npt.NDArray[np.float32] = self._stream.resample_chunk(samples, last=last)
        return out


def s16_chunks(
    blocks: Iterable[npt.NDArray[np.int16]],
    *,
    sensor_id: str,
    stream_id: str,
    sample_rate_hz: int,
    start_time_ns: int = 0,
) -> Iterator[AudioChunk]:
    """AudioChunks of one stream from blocks of int16 frames, as a microphone sends them.

    Parameters
    ----------
    blocks : iterable of np.ndarray [shape=(frames,) or (frames, channels)], int16
        Consecutive audio; each non-empty block becomes one chunk.
    start_time_ns : capture time of the stream's first frame (ns since the epoch); 0 leaves
        ``captured_at`` unset.

    Sequence numbers count from 0 and ``start_sample`` is the running frame count.
    """
    start = 0
    sequence = 0
    for block in blocks:
        if not block.shape[0]:
            continue
        frames = block.reshape(block.shape[0], -1)
        chunk = AudioChunk(
            sensor_id=sensor_id,
            stream_id=stream_id,
            sequence=sequence,
            start_sample=start,
            sample_rate_hz=sample_rate_hz,
            channels=frames.shape[1],
            sample_format=SampleFormat.SAMPLE_FORMAT_S16LE,
            pcm=np.ascontiguousarray(frames, dtype="<i2").tobytes(),
        )
        if start_time_ns:
            chunk.captured_at.FromNanoseconds(
                start_time_ns + start * 1_000_000_000 // sample_rate_hz
            )
        yield chunk
        start += frames.shape[0]
        sequence += 1


def file_blocks(path: str | Path, *, block_s: float) -> tuple[int, Iterator[npt.NDArray[np.int16]]]:
    """The sample rate of an audio file and an iterator of its int16 frames, ``block_s`` at a
    time (all channels), read lazily: memory stays constant however long the file is.

    Raises
    ------
    ConfigurationError
        when the file is missing or not audio libsndfile can read, or ``block_s`` <= 0.
    """
    import soundfile  # noqa: PLC0415 - only file-reading paths need libsndfile

    if block_s <= 0:
        raise ConfigurationError(f"block length must be positive, got {block_s} s")
    try:
        rate = int(soundfile.info(str(path)).samplerate)
    except (OSError, RuntimeError, soundfile.LibsndfileError) as exc:
        raise ConfigurationError(f"cannot read audio file {path}: {exc}") from exc
    block = max(1, int(rate * block_s))

    def blocks() -> Iterator[npt.NDArray[np.int16]]:
        with soundfile.SoundFile(str(path)) as handle:
            yield from handle.blocks(blocksize=block, dtype="int16", always_2d=True)

    return rate, blocks()
