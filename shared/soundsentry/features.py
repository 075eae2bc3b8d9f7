"""Streaming feature windows for many sensors at once.

A :class:`FeatureProfile` says which log-mel windows a model needs: the STFT/mel parameters
(:class:`~soundsentry.dsp.MelSpec`), the window length and hop, the frequency band (a crop of mel
bands) and whether each window is standardised. :class:`Featurizer` turns audio chunks from any
number of sensors into those windows; the frames of every sensor with new audio are computed in
one batched call per mel spec.

Everything is aligned to a grid anchored at the start of each sensor's stream: frame ``i``
starts at sample ``i * hop_length`` and window ``k`` at frame ``k * hop_frames`` (sample indices at
the profile's rate). So the windows from a stream cut into any chunk sizes equal the windows
computed from the whole recording, and after a gap the windows fall back onto the same grid
with the same ids.

Sequence rules per sensor (``AudioChunk.sequence`` and ``start_sample``):

- the next chunk is expected at ``sequence + 1`` and ``start_sample + frames``;
- an earlier sequence is a duplicate or late chunk: dropped and counted (``stale_sequence``);
- a later sequence (lost chunks), a different ``start_sample`` than expected, a new
  ``stream_id`` or a new sample rate resets that sensor: no window spans the discontinuity.

State per sensor and mel spec is bounded: the samples of one unfinished frame, the frames of
the longest window, and a resampler when the sensor's rate differs from the profile's
(see :meth:`Featurizer.state_bytes`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import TypeAdapter, ValidationError

from soundsentry.audio import (
    DEFAULT_LIMITS,
    FULL_SCALE_S16,
    ChunkError,
    ChunkLimits,
    StreamResampler,
    decode_pcm,
    validate_chunk,
)
from soundsentry.contracts import AudioChunk, FeatureWindow, SampleFormat
from soundsentry.dsp import MelFrontEnd, MelSpec
from soundsentry.exceptions import ConfigurationError, ContractError

__all__ = [
    "DEFAULT_PROFILES",
    "BatchResult",
    "FeatureProfile",
    "Featurizer",
    "Window",
    "parse_profile",
    "window_from_proto",
    "window_id",
    "window_to_proto",
]

# RMS floor: digital silence reads as -120 dBFS rather than -inf.
_MIN_MEAN_SQUARE = 1e-12
_S16 = SampleFormat.SAMPLE_FORMAT_S16LE


@dataclass(frozen=True)
class FeatureProfile:
    """The windows one model needs.

    ``window_s`` and ``window_hop_s`` are rounded to whole frames: a window holds
    ``window_frames`` frames and covers ``(window_frames - 1) * hop_length + n_fft`` samples.
    The band keeps the mel bands whose centre frequency lies in ``band_fmin_hz..band_fmax_hz``
    (default: all bands).
    """

    name: str
    mel: MelSpec = field(default_factory=MelSpec)
    window_s: float = 1.0
    window_hop_s: float = 0.5
    band_fmin_hz: float | None = None
    band_fmax_hz: float | None = None
    standardize: bool = False

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise ConfigurationError(
                f"profile name {self.name!r} must be non-empty letters, digits, - and _"
            )
        if self.window_s * self.mel.sample_rate_hz < self.mel.n_fft:
            raise ConfigurationError(
                f"profile {self.name}: window_s={self.window_s} is shorter than one FFT frame"
            )
        if self.window_hop_s * self.mel.sample_rate_hz < self.mel.hop_length:
            raise ConfigurationError(
                f"profile {self.name}: window_hop_s={self.window_hop_s} is shorter than one hop"
            )
        _ = self.band  # raises ConfigurationError for a band with no mel band in it

    @cached_property
    def window_frames(self) -> int:
        mel = self.mel
        return round((self.window_s * mel.sample_rate_hz - mel.n_fft) / mel.hop_length) + 1

    @cached_property
    def hop_frames(self) -> int:
        return max(1, round(self.window_hop_s * self.mel.sample_rate_hz / self.mel.hop_length))

    @cached_property
    def window_samples(self) -> int:
        return (self.window_frames - 1) * self.mel.hop_length + self.mel.n_fft

    @cached_property
    def band(self) -> slice:
        lo = self.mel.fmin_hz if self.band_fmin_hz is None else self.band_fmin_hz
        hi = self.mel.fmax_hz if self.band_fmax_hz is None else self.band_fmax_hz
        return self.mel.band_slice(lo, hi)

    @property
    def num_bands(self) -> int:
        band = self.band
        return int(band.stop) - int(band.start)


DEFAULT_PROFILES: tuple[FeatureProfile, ...] = (FeatureProfile("full-16k"),)

_PROFILE_KEYS = frozenset(f.name for f in dataclasses.fields(FeatureProfile))
_MEL_KEYS = frozenset(f.name for f in dataclasses.fields(MelSpec))


@cache
def _profile_adapter() -> TypeAdapter[FeatureProfile]:
    return TypeAdapter(FeatureProfile)


def parse_profile(item: Any, *, where: str) -> FeatureProfile:
    """A profile from its JSON form (profiles files, model cards): the FeatureProfile fields,
    with ``mel`` an object of MelSpec fields; omitted fields take their defaults.

    Types are checked strictly (``"1.0"`` is not a number) and unknown keys are rejected.

    Raises
    ------
    ConfigurationError
        starting with ``where``, naming the key and the problem.
    """
    if not isinstance(item, dict):
        raise ConfigurationError(f"{where} must be a JSON object, got {type(item).__name__}")
    if isinstance(item.get("name"), str):
        where += f" ({item['name']!r})"
    _check_keys(where, item, _PROFILE_KEYS)
    mel = item.get("mel")
    if isinstance(mel, dict):
        _check_keys(f"{where} mel", mel, _MEL_KEYS)
    try:
        # JSON mode: strict types, and nested objects become MelSpec.
        return _profile_adapter().validate_json(json.dumps(item), strict=True)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'profile'}: {error['msg']}"
            for error in exc.errors(include_url=False)
        )
        raise ConfigurationError(f"{where}: {problems}") from exc
    except ConfigurationError as exc:  # raised by FeatureProfile / MelSpec themselves
        raise ConfigurationError(f"{where}: {exc}") from exc


def _check_keys(where: str, item: dict[str, Any], known: frozenset[str]) -> None:
    unknown = sorted(set(item) - known)
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown key(s) {unknown}; known keys are {sorted(known)}"
        )


def window_id(sensor_id: str, stream_id: str, profile: str, start_sample: int) -> str:
    """Deterministic id of a window: the same audio always gives the same id (replays dedupe)."""
    key = f"{sensor_id}\x1f{stream_id}\x1f{profile}\x1f{start_sample}".encode()
    return hashlib.blake2b(key, digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class Window:
    """One window of one profile for one sensor."""

    window_id: str
    sensor_id: str
    stream_id: str
    profile: str
    start_sample: int
    num_samples: int
    sample_rate_hz: int
    log_mel_db: npt.NDArray[np.float32]  # shape=(num_bands, window_frames)
    rms_dbfs: float
    start_time_ns: int  # capture time of start_sample, ns since the Unix epoch; 0 if unknown


def window_to_proto(window: Window) -> FeatureWindow:
    """The wire form of a window (log-mel as float32 little-endian bytes, row-major)."""
    bands, frames = window.log_mel_db.shape
    message = FeatureWindow(
        window_id=window.window_id,
        sensor_id=window.sensor_id,
        stream_id=window.stream_id,
        profile=window.profile,
        start_sample=window.start_sample,
        num_samples=window.num_samples,
        sample_rate_hz=window.sample_rate_hz,
        num_bands=bands,
        num_frames=frames,
        log_mel_db=window.log_mel_db.astype("<f4", copy=False).tobytes(),
        rms_dbfs=window.rms_dbfs,
    )
    if window.start_time_ns:
        message.start_time.FromNanoseconds(window.start_time_ns)
    return message


def window_from_proto(message: FeatureWindow) -> Window:
    """A window from its wire form, without copying the log-mel bytes.

    Raises
    ------
    ContractError
        ``reason="bad_window_shape"`` when the byte count does not match the shape.
    """
    expected = message.num_bands * message.num_frames * 4
    if not expected or len(message.log_mel_db) != expected:
        raise ContractError(
            "bad_window_shape",
            f"log_mel_db holds {len(message.log_mel_db)} bytes, expected {expected} for "
            f"{message.num_bands} bands x {message.num_frames} frames of float32",
        )
    log_mel = np.frombuffer(message.log_mel_db, dtype="<f4").reshape(
        message.num_bands, message.num_frames
    )
    return Window(
        window_id=message.window_id,
        sensor_id=message.sensor_id,
        stream_id=message.stream_id,
        profile=message.profile,
        start_sample=message.start_sample,
        num_samples=message.num_samples,
        sample_rate_hz=message.sample_rate_hz,
        log_mel_db=log_mel,
        rms_dbfs=message.rms_dbfs,
        start_time_ns=message.start_time.ToNanoseconds() if message.HasField("start_time") else 0,
    )


@dataclass(slots=True)
class BatchResult:
    """What one :meth:`Featurizer.process` call produced."""

    windows: list[Window] = field(default_factory=list)
    # (index of the chunk in the batch, why it was rejected); rejected chunks change no state.
    rejected: list[tuple[int, ChunkError]] = field(default_factory=list)
    # Sequence events by reason: gap, sample_discontinuity, stream_restart, format_change,
    # stale_sequence.
    events: Counter[str] = field(default_factory=Counter)
    frames: int = 0


class _MelStream:
    """One sensor's audio at one mel spec's rate: unfinished samples and recent frames."""

    __slots__ = (
        "due_frame",
        "next_frame",
        "next_window",
        "resampler",
        "ring",
        "ring_first",
        "ring_len",
        "ring_power",
        "skip",
        "tail",
    )

    def __init__(
        self, spec: MelSpec, profiles: Sequence[FeatureProfile], start: int, in_rate: int
    ) -> None:
        hop = spec.hop_length
        # The first frame on the grid that lies wholly in the new audio, and how many samples
        # of the new audio come before it.
        self.next_frame = -(-start // hop)
        self.skip = self.next_frame * hop - start
        self.tail: npt.NDArray[np.float64] = _EMPTY
        # Recent frames: ring[:ring_len] are frames ring_first, ring_first + 1, ...
        capacity = max(p.window_frames + p.hop_frames for p in profiles)
        self.ring = np.empty((capacity, spec.n_mels), dtype=np.float32)
        self.ring_power = np.empty(capacity, dtype=np.float64)
        self.ring_first = self.next_frame
        self.ring_len = 0
        self.next_window = [-(-self.next_frame // p.hop_frames) for p in profiles]
        # The frame count at which the next window of any profile is complete.
        self.due_frame = min(
            k * p.hop_frames + p.window_frames
            for k, p in zip(self.next_window, profiles, strict=True)
        )
        self.resampler = (
            StreamResampler(in_rate_hz=in_rate, out_rate_hz=spec.sample_rate_hz)
            if in_rate != spec.sample_rate_hz
            else None
        )

    def nbytes(self) -> int:
        return self.tail.nbytes + self.ring.nbytes + self.ring_power.nbytes

    def grow(self, frames: int) -> None:
        """Make room for ``frames`` frames (a long chunk; shrinks back on reset)."""
        grown = max(frames, 2 * self.ring.shape[0])
        ring = np.empty((grown, self.ring.shape[1]), dtype=np.float32)
        ring[: self.ring_len] = self.ring[: self.ring_len]
        ring_power = np.empty(grown, dtype=np.float64)
        ring_power[: self.ring_len] = self.ring_power[: self.ring_len]
        self.ring, self.ring_power = ring, ring_power

    def drop_before(self, frame: int) -> None:
        drop = frame - self.ring_first
        if drop <= 0:
            return
        keep = self.ring_len - drop
        if keep > 0:
            self.ring[:keep] = self.ring[drop : self.ring_len]
            self.ring_power[:keep] = self.ring_power[drop : self.ring_len]
        self.ring_len = max(keep, 0)
        self.ring_first = frame


_EMPTY: npt.NDArray[np.float64] = np.empty(0, dtype=np.float64)


_Piece = tuple["_SensorState", _MelStream, int]


@dataclass(slots=True)
class _SensorState:
    sensor_id: str
    stream_id: str
    sample_rate_hz: int
    next_sequence: int
    next_start_sample: int
    # Capture time (ns) of sample 0 of the stream, from the first chunk after the last reset.
    anchor_ns: int
    # One stream per mel spec, in the order of Featurizer._specs.
    mel: list[_MelStream]
    # The largest valid s16le mono payload at this rate (for the fast path).
    max_s16_bytes: int
    # New audio of the current batch, in order.
    pending: list[npt.NDArray[np.float32]] = field(default_factory=list)


class Featurizer:
    """Turns audio chunks from many sensors into feature windows, batched across sensors."""

    def __init__(
        self,
        profiles: Sequence[FeatureProfile] = DEFAULT_PROFILES,
        *,
        limits: ChunkLimits = DEFAULT_LIMITS,
    ) -> None:
        if not profiles:
            raise ConfigurationError("a featurizer needs at least one feature profile")
        names = [p.name for p in profiles]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"profile names must be unique, got {names}")
        self.profiles = tuple(profiles)
        self.limits = limits
        self._by_spec: dict[MelSpec, tuple[FeatureProfile, ...]] = {}
        for profile in self.profiles:
            self._by_spec[profile.mel] = (*self._by_spec.get(profile.mel, ()), profile)
        # Audio is kept in int16 units (full scale 2**15): s16le payloads need no scaling pass.
        self._buffers = [np.empty(0) for _ in self._by_spec]
        self._front_ends = {
            spec: MelFrontEnd(spec, input_scale=FULL_SCALE_S16) for spec in self._by_spec
        }
        self._sensors: dict[str, _SensorState] = {}

    @property
    def sensors(self) -> int:
        return len(self._sensors)

    def state_bytes(self, sensor_id: str) -> int:
        """Bytes of numpy state held for one sensor right now (0 if unknown)."""
        state = self._sensors.get(sensor_id)
        return sum(m.nbytes() for m in state.mel) if state else 0

    def needed_from(self, sensor_id: str) -> tuple[str, int] | None:
        """``(stream_id, sample)``: the first sample of the sensor's stream that windows still
        to come need (at the sensor's rate, counted like ``AudioChunk.start_sample``), or None
        for a sensor without state.

        Processing the stream again from the chunk that holds this sample (after a crash) gives
        exactly the windows that an uninterrupted featurizer would still give: the grid is
        anchored at the stream's start. (Resampled sensors come close but not bit-exact: the
        resampler starts afresh.)
        """
        state = self._sensors.get(sensor_id)
        if state is None:
            return None
        needed = state.next_start_sample
        for stream, (spec, profiles) in zip(state.mel, self._by_spec.items(), strict=True):
            first_frame = min(
                k * p.hop_frames for k, p in zip(stream.next_window, profiles, strict=True)
            )
            first = first_frame * spec.hop_length
            if spec.sample_rate_hz != state.sample_rate_hz:
                first = first * state.sample_rate_hz // spec.sample_rate_hz
            needed = min(needed, first)
        return state.stream_id, needed

    def forget(self, sensor_id: str) -> None:
        """Drop a sensor's state (e.g. when its partition is revoked)."""
        self._sensors.pop(sensor_id, None)

    def process(self, chunks: Iterable[AudioChunk]) -> BatchResult:
        """Add the chunks (any sensors, each sensor's in order) and return the finished windows.

        A chunk that fails validation is reported in ``rejected`` and changes nothing else.
        """
        result = BatchResult()
        touched: dict[str, _SensorState] = {}
        sensors = self._sensors
        for index, chunk in enumerate(chunks):
            # Fast path: the next s16le mono chunk of a stream we know, of an acceptable size.
            state = sensors.get(chunk.sensor_id)
            if (
                state is not None
                and chunk.sequence == state.next_sequence
                and chunk.start_sample == state.next_start_sample
                and chunk.stream_id == state.stream_id
                and chunk.sample_rate_hz == state.sample_rate_hz
                and chunk.sample_format == _S16
                and chunk.channels <= 1
            ):
                pcm = chunk.pcm
                size = len(pcm)
                if 0 < size <= state.max_s16_bytes and not size & 1:
                    state.next_sequence += 1
                    state.next_start_sample += size >> 1
                    touched[chunk.sensor_id] = state
                    # int16 units, no copy (full scale 2**15 is undone exactly by the front end)
                    state.pending.append(np.frombuffer(pcm, dtype="<i2"))
                    continue
            try:
                validate_chunk(chunk, self.limits)
                fast = chunk.sample_format == _S16 and chunk.channels <= 1
                samples = (
                    None
                    if fast
                    else decode_pcm(
                        chunk.pcm, sample_format=chunk.sample_format, channels=chunk.channels
                    )
                    * np.float32(FULL_SCALE_S16)  # int16 units, like the fast path
                )
            except ChunkError as error:
                result.rejected.append((index, error))
                continue
            frames = len(chunk.pcm) // 2 if samples is None else samples.size
            state = self._admit(chunk, frames, result.events)
            if state is None:
                continue
            touched[state.sensor_id] = state
            state.pending.append(
                np.frombuffer(chunk.pcm, dtype="<i2") if samples is None else samples
            )
        states = list(touched.values())
        for spec_index, (spec, profiles) in enumerate(self._by_spec.items()):
            result.frames += self._compute(
                spec_index, self._front_ends[spec], profiles, states, result.windows
            )
        for state in states:
            state.pending.clear()
        return result

    # -- sequence bookkeeping ------------------------------------------------------------

    def _admit(self, chunk: AudioChunk, frames: int, events: Counter[str]) -> _SensorState | None:
        state = self._sensors.get(chunk.sensor_id)
        reason = None
        if state is None:
            pass
        elif chunk.stream_id != state.stream_id:
            reason = "stream_restart"
        elif chunk.sequence < state.next_sequence:
            events["stale_sequence"] += 1
            return None
        elif chunk.sequence > state.next_sequence:
            reason = "gap"
        elif chunk.start_sample != state.next_start_sample:
            reason = "sample_discontinuity"
        elif chunk.sample_rate_hz != state.sample_rate_hz:
            reason = "format_change"
        if state is None or reason is not None:
            if reason is not None:
                events[reason] += 1
            # Audio before the discontinuity that is still pending in this batch is dropped
            # with the old state.
            state = self._reset(chunk)
        state.next_sequence = chunk.sequence + 1
        state.next_start_sample = chunk.start_sample + frames
        return state

    def _reset(self, chunk: AudioChunk) -> _SensorState:
        rate = chunk.sample_rate_hz
        captured_ns = (
            chunk.captured_at.seconds * 1_000_000_000 + chunk.captured_at.nanos
            if chunk.HasField("captured_at")
            else 0
        )
        anchor = captured_ns - round(chunk.start_sample * 1e9 / rate) if captured_ns else 0
        mel = [
            _MelStream(spec, profiles, round(chunk.start_sample * spec.sample_rate_hz / rate), rate)
            for spec, profiles in self._by_spec.items()
        ]
        state = _SensorState(
            sensor_id=chunk.sensor_id,
            stream_id=chunk.stream_id,
            sample_rate_hz=rate,
            next_sequence=chunk.sequence,
            next_start_sample=chunk.start_sample,
            anchor_ns=anchor,
            mel=mel,
            max_s16_bytes=min(
                self.limits.max_chunk_bytes, int(self.limits.max_chunk_seconds * rate) * 2
            ),
        )
        self._sensors[chunk.sensor_id] = state
        return state

    # -- frames and windows --------------------------------------------------------------

    def _gather(
        self, spec_index: int, *, n_fft: int, hop: int, states: list[_SensorState]
    ) -> tuple[npt.NDArray[np.float64], list[_Piece], npt.NDArray[np.intp]]:
        """Lay each sensor's unfinished samples plus new audio on one hop-aligned buffer, so
        that every frame of every sensor is a slice of it; sensors with too little audio for a
        frame just keep it.

        Returns the buffer, ``(state, stream, frames)`` per sensor with frames, and the start
        sample in the buffer of every frame, sensor after sensor.
        """
        # One buffer per mel spec, reused: a fresh 10+ MB array per batch costs page faults.
        signal = self._buffers[spec_index]
        pieces: list[_Piece] = []
        firsts: list[int] = []
        position = 0  # where the next sensor's samples go: always on the hop grid
        for state in states:
            stream = state.mel[spec_index]
            new = state.pending
            if stream.resampler is not None:
                joined = new[0] if len(new) == 1 else np.concatenate(new)
                new = [stream.resampler.process(joined.astype(np.float32))]
            if stream.skip:
                new = self._skip(stream, new)
            tail = stream.tail
            length = tail.size
            for audio in new:
                length += audio.size
            if length < n_fft:
                if new:
                    stream.tail = np.concatenate((tail, *new))
                continue
            if position + length > signal.size:
                grown = np.empty(max(2 * signal.size, position + length + n_fft))
                grown[:position] = signal[:position]
                signal = self._buffers[spec_index] = grown
            end = position + tail.size
            signal[position:end] = tail
            for audio in new:
                signal[end : end + audio.size] = audio
                end += audio.size
            count = (length - n_fft) // hop + 1
            # Samples from the next unfinished frame on stay for the next batch.
            stream.tail = signal[position + count * hop : end].copy()
            pieces.append((state, stream, count))
            firsts.append(position)
            position += -(-length // hop) * hop
        if not pieces:
            return signal, pieces, np.empty(0, dtype=np.intp)
        counts = np.fromiter((p[2] for p in pieces), dtype=np.intp, count=len(pieces))
        ends = np.cumsum(counts)
        # Frame j of a sensor whose samples begin at `first` starts at first + j * hop.
        starts = np.arange(int(ends[-1]), dtype=np.intp) - np.repeat(ends - counts, counts)
        starts *= hop
        starts += np.repeat(np.asarray(firsts, dtype=np.intp), counts)
        return signal, pieces, starts

    def _compute(
        self,
        spec_index: int,
        front_end: MelFrontEnd,
        profiles: tuple[FeatureProfile, ...],
        states: list[_SensorState],
        windows: list[Window],
    ) -> int:
        spec = front_end.spec
        signal, pieces, starts = self._gather(
            spec_index, n_fft=spec.n_fft, hop=spec.hop_length, states=states
        )
        if not pieces:
            return 0
        log_mel, power = front_end.compute(signal, starts)
        offset = 0
        for state, stream, count in pieces:
            end = offset + count
            ring_end = stream.ring_len + count
            if ring_end > stream.ring.shape[0]:
                stream.grow(ring_end)
            stream.ring[stream.ring_len : ring_end] = log_mel[offset:end]
            stream.ring_power[stream.ring_len : ring_end] = power[offset:end]
            stream.ring_len = ring_end
            stream.next_frame += count
            offset = end
            if stream.next_frame >= stream.due_frame:
                self._emit(state, stream, spec, profiles, windows)
        return int(starts.size)

    @staticmethod
    def _skip(
        stream: _MelStream, new: list[npt.NDArray[np.floating]]
    ) -> list[npt.NDArray[np.floating]]:
        kept = []
        for audio in new:
            if stream.skip >= audio.size:
                stream.skip -= audio.size
                continue
            kept.append(audio[stream.skip :])
            stream.skip = 0
        return kept

    @staticmethod
    def _emit(
        state: _SensorState,
        stream: _MelStream,
        spec: MelSpec,
        profiles: tuple[FeatureProfile, ...],
        windows: list[Window],
    ) -> None:
        keep_from = stream.next_frame
        due = sys.maxsize
        for p, profile in enumerate(profiles):
            k = stream.next_window[p]
            while k * profile.hop_frames + profile.window_frames <= stream.next_frame:
                first = k * profile.hop_frames
                lo = first - stream.ring_first
                block = np.ascontiguousarray(
                    stream.ring[lo : lo + profile.window_frames, profile.band].T
                )
                if profile.standardize:
                    block = (block - block.mean()) / max(float(block.std()), 1e-6)
                # add.reduce: ndarray.mean's dispatch costs more than the sum of ~50 values.
                mean_square = (
                    float(np.add.reduce(stream.ring_power[lo : lo + profile.window_frames]))
                    / profile.window_frames
                )
                start_sample = first * spec.hop_length
                windows.append(
                    Window(
                        window_id=window_id(
                            state.sensor_id, state.stream_id, profile.name, start_sample
                        ),
                        sensor_id=state.sensor_id,
                        stream_id=state.stream_id,
                        profile=profile.name,
                        start_sample=start_sample,
                        num_samples=profile.window_samples,
                        sample_rate_hz=spec.sample_rate_hz,
                        log_mel_db=block.astype(np.float32, copy=False),
                        rms_dbfs=10.0 * math.log10(max(mean_square, _MIN_MEAN_SQUARE)),
                        start_time_ns=(
                            state.anchor_ns + round(start_sample * 1e9 / spec.sample_rate_hz)
                            if state.anchor_ns
                            else 0
                        ),
                    )
                )
                k += 1
            stream.next_window[p] = k
            keep_from = min(keep_from, k * profile.hop_frames)
            due = min(due, k * profile.hop_frames + profile.window_frames)
        stream.due_frame = due
        stream.drop_before(keep_from)
