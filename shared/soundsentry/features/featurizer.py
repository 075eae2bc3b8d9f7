"""Streaming feature windows for many sensors at once.

A :class:`FeatureProfile` says which log-mel windows a model needs: the STFT/mel parameters
(:class:`~soundsentry.audio.mel.MelSpec`), the window length and hop, the frequency band (a crop
of mel bands) and whether each window is standardised. :class:`Featurizer` turns audio chunks from
any number of sensors into those windows; the frames of every sensor with new audio are computed
in one batched call per mel spec.

Everything is aligned to a grid anchored at the start of each sensor's stream: frame ``i``
starts at sample ``i * hop_length`` and window ``k`` at frame ``k * hop_frames`` (sample indices at
the profile's rate). So the windows from a stream cut into any chunk sizes equal the windows
computed from the whole recording, and after a gap the windows fall back onto the same grid
with the same ids.

Sequence rules per sensor (``AudioChunk.sequence`` and ``start_sample``):

- the next chunk is expected at ``sequence + 1`` and ``start_sample + frames``;
- an earlier sequence is a duplicate or late chunk: dropped and counted (``stale_sequence``),
  unless it is more than ``SEQUENCE_REWIND_LIMIT`` (10,000) behind: a sensor that started over
  with the same ``stream_id``, which resets it (``sequence_restart``);
- a later sequence (lost chunks), a different ``start_sample`` than expected, a new
  ``stream_id`` or a new sample rate resets that sensor: no window spans the discontinuity.

State per sensor and mel spec is bounded: the samples of one unfinished frame, the frames of
the longest window, and a resampler when the sensor's rate differs from the profile's
(see :meth:`Featurizer.state_bytes`). The arrays of all sensors live in one slab per mel spec,
a row per sensor, so that compiled loops lay out the frames and cut the windows of a whole
batch in one call each: per chunk, Python only checks the sequence and queues the payload.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import TypeAdapter, ValidationError

from soundsentry.audio._kernels import kernels
from soundsentry.audio.mel import MelFrontEnd, MelSpec
from soundsentry.audio.pcm import (
    DEFAULT_LIMITS,
    FULL_SCALE_S16,
    ChunkError,
    ChunkLimits,
    StreamResampler,
    decode_pcm,
    validate_chunk,
)
from soundsentry.contracts import SEQUENCE_REWIND_LIMIT, AudioChunk, FeatureWindow, SampleFormat
from soundsentry.exceptions import ConfigurationError, ContractError
from soundsentry.features.slots import SlotTable

__all__ = [
    "DEFAULT_PROFILES",
    "BatchResult",
    "FeatureProfile",
    "Featurizer",
    "Window",
    "parse_profile",
    "profile_document",
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


def profile_document(profile: FeatureProfile) -> dict[str, Any]:
    """The JSON form of ``profile`` that :func:`parse_profile` reads (every field given)."""
    return {
        "name": profile.name,
        "mel": dataclasses.asdict(profile.mel),
        "window_s": profile.window_s,
        "window_hop_s": profile.window_hop_s,
        "band_fmin_hz": profile.band_fmin_hz,
        "band_fmax_hz": profile.band_fmax_hz,
        "standardize": profile.standardize,
    }


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
        ``reason="bad_window_shape"`` when the byte count does not match the shape,
        ``reason="non_finite_window"`` for NaN or infinite values.
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
    if not np.isfinite(log_mel).all():  # parked here, not blamed on the scores a stage later
        raise ContractError("non_finite_window", "log_mel_db holds NaN or infinite values")
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


class _Slab:
    """One mel spec's streaming state of every sensor: row ``r`` of each array is the sensor in
    row ``r`` (rows are handed out by a :class:`~soundsentry.features.slots.SlotTable`).

    Per row: the samples of the unfinished frame (``tails[r, :tail_length[r]]``; float32 holds
    them exactly, as all audio arrives as int16 or float32), the samples still to skip before the
    first frame on the grid, the number of the next frame, each profile's next window number, and
    a ring of the last frames (frame ``f`` at ``f % frames``) with their levels.
    """

    __slots__ = ("next_frame", "next_window", "ring", "ring_level", "skip", "tail_length", "tails")

    def __init__(self, spec: MelSpec, profiles: Sequence[FeatureProfile], capacity: int) -> None:
        frames = max(p.window_frames for p in profiles)
        self.tails = np.zeros((capacity, spec.n_fft), dtype=np.float32)
        self.tail_length = np.zeros(capacity, dtype=np.intp)
        self.skip = np.zeros(capacity, dtype=np.intp)
        self.next_frame = np.zeros(capacity, dtype=np.intp)
        self.next_window = np.zeros((capacity, len(profiles)), dtype=np.intp)
        self.ring = np.zeros((capacity, frames, spec.n_mels), dtype=np.float32)
        self.ring_level = np.zeros((capacity, frames), dtype=np.float64)

    def arrays(self) -> tuple[npt.NDArray[Any], ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def row_bytes(self) -> int:
        return sum(a.nbytes // a.shape[0] for a in self.arrays())

    def resize(self, capacity: int) -> None:
        for name in self.__slots__:
            old = getattr(self, name)
            new = np.zeros((capacity, *old.shape[1:]), dtype=old.dtype)
            keep = min(capacity, old.shape[0])
            new[:keep] = old[:keep]
            setattr(self, name, new)

    def move(self, source: int, target: int) -> None:
        for array in self.arrays():
            array[target] = array[source]


class _Plan:
    """What one mel spec's frames and windows need: profiles, front end, slab, buffers."""

    __slots__ = (
        "band_start",
        "band_stop",
        "front_end",
        "hop_frames",
        "profiles",
        "signal",
        "slab",
        "spec",
        "window_frames",
    )

    def __init__(self, spec: MelSpec, profiles: tuple[FeatureProfile, ...], capacity: int) -> None:
        self.spec = spec
        self.profiles = profiles
        self.front_end = MelFrontEnd(spec, input_scale=FULL_SCALE_S16)
        self.slab = _Slab(spec, profiles, capacity)
        self.hop_frames = np.array([p.hop_frames for p in profiles], dtype=np.intp)
        self.window_frames = np.array([p.window_frames for p in profiles], dtype=np.intp)
        self.band_start = np.array([p.band.start for p in profiles], dtype=np.intp)
        self.band_stop = np.array([p.band.stop for p in profiles], dtype=np.intp)
        # Reused across batches: a fresh 10+ MB array per batch costs page faults. float32
        # holds every sample exactly (see _Slab) with half the memory traffic of float64.
        self.signal = np.empty(0, dtype=np.float32)

    def reset(self, row: int, start: int) -> None:
        """Start row's stream at sample ``start`` (at this spec's rate)."""
        slab, hop = self.slab, self.spec.hop_length
        # The first frame on the grid that lies wholly in the new audio, and how many samples
        # of the new audio come before it.
        next_frame = -(-start // hop)
        slab.next_frame[row] = next_frame
        slab.skip[row] = next_frame * hop - start
        slab.tail_length[row] = 0
        slab.next_window[row] = -(-next_frame // self.hop_frames)


@dataclass(slots=True)
class _SensorState:
    sensor_id: str
    stream_id: str
    sample_rate_hz: int
    next_sequence: int
    next_start_sample: int
    # Capture time (ns) of sample 0 of the stream, from the first chunk after the last reset.
    anchor_ns: int
    # The sensor's row in every spec's slab.
    row: int
    # One per mel spec, in the order of Featurizer._plans: None at the spec's own rate.
    resamplers: list[StreamResampler | None]
    # The largest valid s16le mono payload at this rate (for the fast path).
    max_s16_bytes: int
    # The process() call that last queued audio of this sensor.
    batch: int = 0
    resampled: bool = field(init=False)

    def __post_init__(self) -> None:
        self.resampled = any(r is not None for r in self.resamplers)


@dataclass(slots=True)
class _Queue:
    """The audio of one process() call, chunk by chunk: the sensor's row, the audio (s16le bytes
    or float32 in int16 units) and its sample count."""

    rows: list[int] = field(default_factory=list)
    audio: list[bytes | npt.NDArray[np.float32]] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    all_s16: bool = True
    # Sensors queued with a resampler (checked against the current state before use).
    resampled: dict[str, _SensorState] = field(default_factory=dict)

    # Entry indices by row, extended as entries are queued: many resets in one large batch
    # (a fleet restarting) index the queue once instead of scanning it per reset.
    _by_row: dict[int, list[int]] = field(default_factory=dict)
    _indexed: int = 0

    def entries(self) -> dict[int, list[int]]:
        """Each row's entry indices so far, rows in order of first appearance."""
        rows, by_row = self.rows, self._by_row
        for index in range(self._indexed, len(rows)):
            by_row.setdefault(rows[index], []).append(index)
        self._indexed = len(rows)
        return by_row

    def drop(self, row: int) -> None:
        """Empty the row's queued audio (its sensor was reset: no window spans the reset)."""
        for index in self.entries().get(row, ()):
            self.audio[index] = b""
            self.lengths[index] = 0


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
        by_spec: dict[MelSpec, tuple[FeatureProfile, ...]] = {}
        for profile in self.profiles:
            by_spec[profile.mel] = (*by_spec.get(profile.mel, ()), profile)
        self._rows = SlotTable(min_capacity=16)
        # Audio is kept in int16 units (full scale 2**15): s16le payloads need no scaling pass.
        self._plans = [_Plan(spec, ps, self._rows.capacity) for spec, ps in by_spec.items()]
        self._kernels = kernels()
        self._sensors: dict[str, _SensorState] = {}
        self._row_state: list[_SensorState | None] = [None] * self._rows.capacity
        self._batch = 0

    @property
    def sensors(self) -> int:
        return len(self._sensors)

    def state_bytes(self, sensor_id: str) -> int:
        """Bytes of numpy state held for one sensor (its slab rows; 0 if unknown)."""
        return sum(p.slab.row_bytes() for p in self._plans) if sensor_id in self._sensors else 0

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
        for plan in self._plans:
            spec = plan.spec
            first_frame = int((plan.slab.next_window[state.row] * plan.hop_frames).min())
            first = first_frame * spec.hop_length
            if spec.sample_rate_hz != state.sample_rate_hz:
                first = first * state.sample_rate_hz // spec.sample_rate_hz
            needed = min(needed, first)
        return state.stream_id, needed

    def forget(self, sensor_id: str) -> None:
        """Drop a sensor's state (e.g. when its partition is revoked)."""
        state = self._sensors.pop(sensor_id, None)
        if state is None:
            return
        self._row_state[state.row] = None
        moves = self._rows.release(state.row)
        for source, target in moves:
            moved = self._row_state[source]
            assert moved is not None  # the table moves only rows in use
            for plan in self._plans:
                plan.slab.move(source, target)
            moved.row = target
            self._row_state[target] = moved
        self._fit_capacity()

    def _fit_capacity(self) -> None:
        """Slabs and row states as large as the slot table, which grows when a row is acquired
        and shrinks (after moving rows down) when one is released."""
        capacity = self._rows.capacity
        if capacity != len(self._row_state):
            for plan in self._plans:
                plan.slab.resize(capacity)
            self._row_state = (self._row_state + [None] * capacity)[:capacity]

    def process(self, chunks: Iterable[AudioChunk]) -> BatchResult:
        """Add the chunks (any sensors, each sensor's in order) and return the finished windows.

        A chunk that fails validation is reported in ``rejected`` and changes nothing else.
        """
        result = BatchResult()
        self._batch += 1
        batch = self._batch
        queue = _Queue()
        rows, audio, lengths = queue.rows, queue.audio, queue.lengths
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
                    state.batch = batch
                    # int16 units (full scale 2**15 is undone exactly by the front end)
                    rows.append(state.row)
                    audio.append(pcm)
                    lengths.append(size >> 1)
                    if state.resampled:
                        queue.resampled[chunk.sensor_id] = state
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
            state = self._admit(chunk, frames, result.events, queue)
            if state is None:
                continue
            state.batch = batch
            rows.append(state.row)
            if samples is None:
                audio.append(chunk.pcm)
            else:
                audio.append(samples)
                queue.all_s16 = False
            lengths.append(frames)
            if state.resampled:
                queue.resampled[chunk.sensor_id] = state
        if rows:
            self._compute(queue, result)
        return result

    # -- sequence bookkeeping ------------------------------------------------------------

    def _admit(
        self, chunk: AudioChunk, frames: int, events: Counter[str], queue: _Queue
    ) -> _SensorState | None:
        state = self._sensors.get(chunk.sensor_id)
        reason = None
        if state is None:
            pass
        elif chunk.stream_id != state.stream_id:
            reason = "stream_restart"
        elif chunk.sequence < state.next_sequence - SEQUENCE_REWIND_LIMIT:
            reason = "sequence_restart"  # the sensor started over with the same stream id
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
            if state is not None and state.batch == self._batch:
                # Audio before the discontinuity that is still queued in this batch is dropped
                # with the old state.
                queue.drop(state.row)
            state = self._reset(chunk, None if state is None else state.row)
        state.next_sequence = chunk.sequence + 1
        state.next_start_sample = chunk.start_sample + frames
        return state

    def _reset(self, chunk: AudioChunk, row: int | None) -> _SensorState:
        rate = chunk.sample_rate_hz
        captured_ns = (
            chunk.captured_at.seconds * 1_000_000_000 + chunk.captured_at.nanos
            if chunk.HasField("captured_at")
            else 0
        )
        anchor = captured_ns - round(chunk.start_sample * 1e9 / rate) if captured_ns else 0
        if row is None:
            row = self._rows.acquire()
            self._fit_capacity()
        for plan in self._plans:
            plan.reset(row, round(chunk.start_sample * plan.spec.sample_rate_hz / rate))
        state = _SensorState(
            sensor_id=chunk.sensor_id,
            stream_id=chunk.stream_id,
            sample_rate_hz=rate,
            next_sequence=chunk.sequence,
            next_start_sample=chunk.start_sample,
            anchor_ns=anchor,
            row=row,
            resamplers=[
                StreamResampler(in_rate_hz=rate, out_rate_hz=plan.spec.sample_rate_hz)
                if rate != plan.spec.sample_rate_hz
                else None
                for plan in self._plans
            ],
            max_s16_bytes=min(
                self.limits.max_chunk_bytes, int(self.limits.max_chunk_seconds * rate) * 2
            ),
        )
        self._sensors[chunk.sensor_id] = state
        self._row_state[row] = state
        return state

    # -- frames and windows --------------------------------------------------------------

    def _compute(self, queue: _Queue, result: BatchResult) -> None:
        """Frames and windows of the queued audio, one mel spec at a time."""
        if queue.all_s16:
            audio: npt.NDArray[np.int16] | npt.NDArray[np.float32] = np.frombuffer(
                b"".join(queue.audio),  # type: ignore[arg-type] # all_s16: only bytes
                dtype=np.int16,
            )
        else:
            audio = np.concatenate(
                [np.frombuffer(a, dtype="<i2") if isinstance(a, bytes) else a for a in queue.audio],
                dtype=np.float32,  # exact: int16 and float32 values
            )
        rows = np.array(queue.rows, dtype=np.intp)
        lengths = np.array(queue.lengths, dtype=np.intp)
        offsets = np.cumsum(lengths) - lengths
        resampled = [
            state
            for sensor_id, state in queue.resampled.items()
            if self._sensors.get(sensor_id) is state
        ]
        for index, plan in enumerate(self._plans):
            movers = [s for s in resampled if s.resamplers[index] is not None]
            plan_audio, plan_offsets, plan_lengths = (
                self._resample(
                    index,
                    movers=movers,
                    entries=queue.entries(),
                    audio=audio,
                    offsets=offsets,
                    lengths=lengths,
                )
                if movers
                else (audio, offsets, lengths)
            )
            result.frames += self._frames(
                plan,
                audio=plan_audio,
                rows=rows,
                offsets=plan_offsets,
                lengths=plan_lengths,
                windows=result.windows,
            )

    @staticmethod
    def _resample(
        index: int,
        *,
        movers: list[_SensorState],
        entries: dict[int, list[int]],
        audio: npt.NDArray[np.int16] | npt.NDArray[np.float32],
        offsets: npt.NDArray[np.intp],
        lengths: npt.NDArray[np.intp],
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.intp], npt.NDArray[np.intp]]:
        """The queue (``entries``: indices by row) with the audio of resampled sensors replaced
        by its resampled form at mel spec ``index``'s rate (appended to the audio, as each
        sensor's first entry)."""
        by_row = {state.row: state for state in movers}
        parts = [audio.astype(np.float32)]
        offsets, lengths = offsets.copy(), lengths.copy()
        end = audio.size
        for row, mine in entries.items():
            if row not in by_row:
                continue
            joined = np.concatenate([audio[offsets[e] : offsets[e] + lengths[e]] for e in mine])
            resampler = by_row[row].resamplers[index]
            assert resampler is not None  # movers have one at this spec
            out = resampler.process(joined.astype(np.float32))
            lengths[mine] = 0
            offsets[mine[0]], lengths[mine[0]] = end, out.size
            parts.append(out)
            end += out.size
        return np.concatenate(parts), offsets, lengths

    def _frames(
        self,
        plan: _Plan,
        *,
        audio: npt.NDArray[np.int16] | npt.NDArray[np.float32],
        rows: npt.NDArray[np.intp],
        offsets: npt.NDArray[np.intp],
        lengths: npt.NDArray[np.intp],
        windows: list[Window],
    ) -> int:
        """Lay each sensor's unfinished samples plus new audio on one hop-aligned buffer, so
        that every frame of every sensor is a slice of it (sensors with too little audio for a
        frame just keep it), compute the frames, and cut the finished windows."""
        spec, slab = plan.spec, plan.slab
        n_fft, hop = spec.n_fft, spec.hop_length
        # Per sensor: its tail (< n_fft), its audio and padding to the hop grid (< hop).
        bound = audio.size + rows.size * (n_fft + hop)
        if plan.signal.size < bound:
            plan.signal = np.empty(max(bound, 2 * plan.signal.size), dtype=np.float32)
        starts = np.empty(audio.size // hop + rows.size + 1, dtype=np.intp)
        piece_row = np.empty(rows.size, dtype=np.intp)
        piece_frames = np.empty(rows.size, dtype=np.intp)
        pieces, frames = self._kernels.gather(
            audio,
            rows,
            offsets,
            lengths,
            slab.tails,
            slab.tail_length,
            slab.skip,
            hop,
            plan.signal,
            starts,
            piece_row,
            piece_frames,
        )
        if not frames:
            return 0
        log_mel, level = plan.front_end.compute(plan.signal, starts[:frames])
        blocks, levels, records = self._kernels.windows(
            log_mel,
            level,
            piece_row[:pieces],
            piece_frames[:pieces],
            slab.ring,
            slab.ring_level,
            slab.next_frame,
            slab.next_window,
            plan.hop_frames,
            plan.window_frames,
            plan.band_start,
            plan.band_stop,
        )
        if records.size:
            self._emit(plan, blocks, levels, records, windows)
        return int(frames)

    def _emit(
        self,
        plan: _Plan,
        blocks: npt.NDArray[np.float32],
        levels: npt.NDArray[np.float64],
        records: npt.NDArray[np.intp],
        windows: list[Window],
    ) -> None:
        spec = plan.spec
        rate, hop = spec.sample_rate_hz, spec.hop_length
        shapes = [(p.num_bands, p.window_frames) for p in plan.profiles]
        row_state = self._row_state
        for row, p, k, block_at, level_at in records.tolist():
            state = row_state[row]
            assert state is not None  # rows with audio have a sensor
            profile = plan.profiles[p]
            bands, frames = shapes[p]
            block = blocks[block_at : block_at + bands * frames].reshape(bands, frames)
            if profile.standardize:
                block = (block - block.mean()) / max(float(block.std()), 1e-6)
            # add.reduce: ndarray.mean's dispatch costs more than the sum of ~50 values.
            mean_square = float(np.add.reduce(levels[level_at : level_at + frames])) / frames
            start_sample = k * profile.hop_frames * hop
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
                    sample_rate_hz=rate,
                    log_mel_db=block.astype(np.float32, copy=False),
                    rms_dbfs=10.0 * math.log10(max(mean_square, _MIN_MEAN_SQUARE)),
                    start_time_ns=(
                        state.anchor_ns + round(start_sample * 1e9 / rate) if state.anchor_ns else 0
                    ),
                )
            )
