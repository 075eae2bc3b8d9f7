"""Timed sound events from overlapping window scores, offline and streaming.

A classifier scores overlapping windows (say 1.0 s every 0.5 s) with a probability per label,
optionally with a score per frame of the window. For one label and one stream,
:class:`EventTracker` turns those scores into events as they arrive: ``started`` as soon as an
event is confirmed, ``ended`` as soon as it is over. :func:`detect_events` does the same for a
whole recording by feeding a tracker every window and flushing it, so offline and streaming
always agree. An :class:`EventRule` holds one label's thresholds; :class:`EventRules` picks the
rule of each label, with a default.

Timing model
------------
All times are integer sample indices since the stream's start, at ``sample_rate_hz``; the
``*_s`` properties convert to seconds. A window starting at sample ``s`` with ``L`` samples, with
``H`` samples between consecutive window starts (``0 < H <= L``), speaks for its central
segment ``[s + (L - H) // 2, s + (L - H) // 2 + H)`` (when ``L - H`` is odd the segment lies half
a sample early), so consecutive windows tile the time line with no overlap and no hole. The
first window of a stream (and the first after a gap) also speaks for the ``(L - H) // 2``
samples before its segment, which no other window covers: its segment starts at ``s``, so a
sound that is already there when a stream starts gets an onset at the stream's start (not a
quarter of a window later, outside a 200 ms onset collar). An event's onset is the start
of the segment of its first window whose smoothed score is ``>= on_threshold`` and its offset
is the end of the segment of its last window whose smoothed score is ``>= off_threshold``.

With frame-level scores (frame ``f`` of a window covers
``[s + f * frame_hop_samples, s + f * frame_hop_samples + frame_samples)``), only the frames
lying wholly inside the window's segment count: the onset moves to the start of the first such
frame of the first window with a frame score ``>=`` the onset threshold (``on_threshold x
onset_ratio``, rule 5; ``on_threshold`` by default), and the offset to the end of
the last such frame of the last window with a frame score ``>= off_threshold``. For the onset
in a stream's first window the frames from the window's start count too (the samples it owns
before its segment); offsets always use the segment's frames. When no frame qualifies the
segment bound stays. Frame scores are raw, not smoothed. So an onset never moves
before its segment's start nor an offset after its segment's end, and onset < offset.

Event rules
-----------
An event is what this offline definition gives, and the tracker reaches the same result
causally:

1. **Smoothing.** The smoothed score of a window is the mean of its score and the scores of the
   ``smoothing_windows - 1`` windows before it; windows before the stream's start (or before a
   gap, see below) count as 0. So a single-window spike is damped even in a stream's first
   window, and a sound at a stream's very start is confirmed up to ``smoothing_windows - 1``
   windows late.
2. **Hysteresis.** A run starts at a window with smoothed score ``>= on_threshold`` and goes on
   while the smoothed score stays ``>= off_threshold``; a score between the two keeps a run
   going but never starts one.
3. **Merging.** Consecutive runs whose gap (next onset minus previous offset, in samples) is
   shorter than ``merge_gap_s`` are one event; a gap of exactly ``merge_gap_s`` separates them.
   A gap is always at least one segment long, so a ``merge_gap_s`` of one hop or less never
   merges anything.
4. **Minimum duration.** An event whose ``offset - onset`` is shorter than ``min_duration_s`` is
   discarded. Durations are compared in samples (``round(seconds * sample_rate_hz)``).
5. **Onset look-back** (``onset_lookback_windows`` > 0) and **onset threshold**
   (``onset_ratio``; it also applies to the first window's frames without look-back). A sound
   usually starts a window or two before the first window sure enough of it to reach
   ``on_threshold``: the window that holds the onset holds only part of the sound. So an onset
   found above that lies at its segment's start (its first frame inside the segment is ``>=
   on_threshold``, or no frame is, or the window has no frame scores) moves back into the
   segments of up to ``onset_lookback_windows`` windows before it, latest first, while the
   sound's run goes on: a window whose last frame inside its segment is ``>= on_threshold``
   moves the onset to the start of the run of its segment's frames ``>= on_threshold`` that ends
   there, and, when that run fills its whole segment, on to the window before it; a window
   without frame scores counts as a whole run when its raw score is ``>= on_threshold``. Each
   "``>= on_threshold``" of this rule is ``>= on_threshold x onset_ratio`` (default 1: the on
   threshold itself; frame scores rise before a sound starts, and walking back over them at a
   low threshold can put onsets too early). A lower ratio lets the onset of a rule whose on
   threshold is set high against false alarms (0.98) walk back over the windows that hold a
   sound's first part and score 0.7-0.9; calibration chooses it per label, with the look-back.
   (A segment whose frames reach only the lower threshold, late in it, gets its onset there,
   later than its start.) The look-back never crosses a gap in the stream nor reaches into the
   previous event (the windows of an event in progress, and the window that ends it, are not
   looked at), and it is causal: only windows already seen move the onset, so streaming and
   offline agree. While a look-back could still merge a later run into an event that is waiting
   to end, the tracker waits to end it.

Streaming
---------
:meth:`EventTracker.push` returns ``started`` as soon as the event's known extent (onset to the
offset of its latest active window) reaches ``min_duration_s``, with the onset of its first
window; an event that never gets that long is never started and never reported. It returns
``ended`` as soon as no later window could merge with the event: at the first window after the
drop below ``off_threshold`` (and not merged into the event) whose segment end is at least
``merge_gap_s`` after the event's offset, at a gap in the stream, or at
:meth:`EventTracker.flush`. The ``event`` of a ``started`` update
has ``offset_sample == onset_sample`` (the offset is not known yet) and ``peak_score`` the
highest smoothed score so far; an ``ended`` update has the final offset and peak. Both updates
of one event share :func:`event_id`, derived from (sensor, stream, label, onset sample), so a
replay produces the same ids.

Windows must arrive in increasing ``start_sample`` order, one hop apart. A window that starts
more than one hop after the previous one marks a gap in the stream: an open event ends there
(with its usual offset, at most the end of the last segment before the gap, and the usual
minimum-duration rule), nothing merges across the gap and smoothing restarts from zeros. A
window at or before the previous one (a repeat or late record) is ignored and counted in
:attr:`EventTracker.stale_windows`; one less than a hop after it is off the grid and raises
:class:`~soundsentry.exceptions.BadMessageError`.

State per tracker is a handful of integers and floats plus the last ``smoothing_windows``
scores: about 270 bytes plus 32 bytes per smoothing window, and with look-back about 120 bytes
per look-back window (:meth:`EventTracker.state_bytes`); frame scores are never kept.
"""

from __future__ import annotations

import hashlib
import math
import operator
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from soundsentry.contracts import EventKindName
from soundsentry.exceptions import BadMessageError, ConfigurationError

__all__ = [
    "MAX_LOOKBACK_WINDOWS",
    "SNAPSHOT_FIELDS",
    "Detected",
    "EventRule",
    "EventRules",
    "EventTracker",
    "EventUpdate",
    "detect_events",
    "event_id",
    "segment_bounds",
    "unpacked",
]


FrameScores = Sequence[npt.ArrayLike] | npt.NDArray[np.floating[Any]]


def _number(value: object) -> float | None:
    """``value`` as a float when it is a real number (not a bool), else None."""
    if isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool):
        return float(value)
    return None


def _is_count(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class EventRule:
    """How one label's window scores become events (see the module docstring).

    Parameters
    ----------
    label : str
        The classifier label the rule applies to.
    on_threshold : float
        An event starts at a window whose smoothed score is ``>=`` this; in ``(0, 1]``.
    off_threshold : float
        An event is left at a window whose smoothed score is ``<`` this; in
        ``[0, on_threshold]`` (hysteresis).
    smoothing_windows : int
        Causal moving average over this many window scores (1: no smoothing).
    min_duration_s : float
        Events shorter than this are discarded; a streaming ``started`` waits until the event
        is this long.
    merge_gap_s : float
        A drop below ``off_threshold`` shorter than this does not end the event.
    onset_lookback_windows : int
        How many windows before the one that starts an event its onset may move back into
        (module docstring, rule 5); 0 keeps the onset in that window.
    onset_ratio : float
        Where the onset is placed and looked back for, frames and windows count from
        ``on_threshold x onset_ratio`` (rule 5); in ``(0, 1]``, 1 by default. It never starts an
        event.

    Raises
    ------
    ConfigurationError
        Naming the label and the setting that cannot work.
    """

    label: str
    on_threshold: float
    off_threshold: float
    smoothing_windows: int = 1
    min_duration_s: float = 0.0
    merge_gap_s: float = 0.0
    onset_lookback_windows: int = 0
    onset_ratio: float = 1.0

    def __post_init__(self) -> None:
        label: object = self.label
        if not isinstance(label, str) or not label.strip() or label != label.strip():
            raise ConfigurationError(
                f"event rule label {label!r} must be a non-empty string without surrounding spaces"
            )
        where = f"event rule {label!r}"
        on = _number(self.on_threshold)
        if on is None or not 0.0 < on <= 1.0:
            raise ConfigurationError(
                f"{where}: on_threshold={self.on_threshold!r} must be a number in (0, 1] "
                "(a threshold of 0 would make every window an event)"
            )
        off = _number(self.off_threshold)
        if off is None or not 0.0 <= off <= 1.0:
            raise ConfigurationError(
                f"{where}: off_threshold={self.off_threshold!r} must be a number in [0, 1]"
            )
        if self.off_threshold > self.on_threshold:
            raise ConfigurationError(
                f"{where}: off_threshold={self.off_threshold} must be <= "
                f"on_threshold={self.on_threshold} (hysteresis: enter at on, leave below off)"
            )
        if not _is_count(self.smoothing_windows) or self.smoothing_windows < 1:
            raise ConfigurationError(
                f"{where}: smoothing_windows={self.smoothing_windows!r} must be a whole number >= 1"
            )
        lookback: object = self.onset_lookback_windows
        if not _is_count(lookback) or not 0 <= cast("int", lookback) <= MAX_LOOKBACK_WINDOWS:
            raise ConfigurationError(
                f"{where}: onset_lookback_windows={lookback!r} must be a whole number in "
                f"0..{MAX_LOOKBACK_WINDOWS}"
            )
        ratio = _number(self.onset_ratio)
        if ratio is None or not 0.0 < ratio <= 1.0:
            raise ConfigurationError(
                f"{where}: onset_ratio={self.onset_ratio!r} must be a number in (0, 1]"
            )
        for name in ("min_duration_s", "merge_gap_s"):
            value = _number(getattr(self, name))
            if value is None or not 0.0 <= value < math.inf:
                raise ConfigurationError(
                    f"{where}: {name}={getattr(self, name)!r} must be a finite number of "
                    "seconds >= 0"
                )


@dataclass(frozen=True)
class EventRules:
    """The rule of each label: ``by_label`` where given, else ``default`` with that label.

    ``default.label`` is only a name for the default (e.g. ``"*"``); ``by_label`` keys must equal
    their rule's label.
    """

    default: EventRule
    by_label: Mapping[str, EventRule] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, rule in self.by_label.items():
            if rule.label != key:
                raise ConfigurationError(
                    f"event rules: the rule under {key!r} is for label {rule.label!r}"
                )

    def for_label(self, label: str) -> EventRule:
        """The rule for ``label`` (raises ConfigurationError for an invalid label)."""
        rule = self.by_label.get(label)
        return rule if rule is not None else replace(self.default, label=label)


@dataclass(frozen=True, slots=True)
class Detected:
    """One event: samples ``[onset_sample, offset_sample)`` of the stream, at ``sample_rate_hz``.

    ``peak_score`` is the highest smoothed window score of the event (so far, in a ``started``
    update, whose ``offset_sample`` equals ``onset_sample``).
    """

    label: str
    onset_sample: int
    offset_sample: int
    sample_rate_hz: int
    peak_score: float

    @property
    def onset_s(self) -> float:
        """Onset in seconds since the stream's start."""
        return self.onset_sample / self.sample_rate_hz

    @property
    def offset_s(self) -> float:
        """Offset in seconds since the stream's start."""
        return self.offset_sample / self.sample_rate_hz

    @property
    def duration_s(self) -> float:
        """Offset minus onset, in seconds."""
        return (self.offset_sample - self.onset_sample) / self.sample_rate_hz


@dataclass(frozen=True, slots=True)
class EventUpdate:
    """A streaming change: an event ``started`` (offset not known yet) or ``ended``."""

    kind: EventKindName
    event_id: str
    event: Detected


_SNAPSHOT_VERSION = 1
# The snapshot's fields in a fixed order, for :meth:`EventTracker.packed`.
SNAPSHOT_FIELDS = (
    "recent",
    "ring_pos",
    "last_start",
    "fresh",
    "onset",
    "offset",
    "peak",
    "started",
    "pending",
    "stale_windows",
    "runs",
)
# Windows; the tracker keeps one (segment start, run start) pair per look-back window.
MAX_LOOKBACK_WINDOWS = 8


def event_id(sensor_id: str, stream_id: str, label: str, onset_sample: int) -> str:
    """Deterministic id of an event: blake2b (16 bytes, hex) of its sensor, stream, label, onset.

    The ``started`` and ``ended`` updates of one event share it, and a replay gives the same id.
    """
    key = f"{sensor_id}\x1f{stream_id}\x1f{label}\x1f{onset_sample}".encode()
    return hashlib.blake2b(key, digest_size=16).hexdigest()


def unpacked(values: Sequence[Any]) -> dict[str, Any]:
    """The snapshot (for :meth:`EventTracker.restore`) of :meth:`EventTracker.packed` values.

    Raises
    ------
    BadMessageError
        ``bad_tracker_state`` when ``values`` is not a list of that many values.
    """
    if not isinstance(values, list | tuple) or len(values) != len(SNAPSHOT_FIELDS):
        raise BadMessageError(
            "bad_tracker_state", f"not {len(SNAPSHOT_FIELDS)} packed tracker values: {values!r}"
        )
    return {"version": _SNAPSHOT_VERSION, **dict(zip(SNAPSHOT_FIELDS, values, strict=True))}


def segment_bounds(start_sample: int, *, window_samples: int, hop_samples: int) -> tuple[int, int]:
    """The segment ``[begin, end)`` (samples) a window's score speaks for (module docstring)."""
    begin = start_sample + (window_samples - hop_samples) // 2
    return begin, begin + hop_samples


def _score(value: object) -> float:
    score = _number(value)
    if score is None or not 0.0 <= score <= 1.0:
        raise BadMessageError("bad_score", f"score {value!r} is not a probability in [0, 1]")
    return score


def _frames(value: npt.ArrayLike) -> npt.NDArray[np.float64]:
    try:
        frames = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise BadMessageError(
            "bad_frame_scores", f"frame scores are not an array of numbers: {error}"
        ) from error
    if frames.ndim != 1:
        raise BadMessageError(
            "bad_frame_scores", f"frame scores must be 1-D, got shape {frames.shape}"
        )
    # min()/max() rather than np.all: a third of the time per window; NaN fails both.
    if frames.size and not (frames.min() >= 0.0 and frames.max() <= 1.0):
        raise BadMessageError(
            "bad_frame_scores",
            "frame scores must be probabilities in [0, 1] (found NaN or out of range)",
        )
    return frames


class EventTracker:
    """Events of one label in one stream, window by window (module docstring: rules, timing).

    Parameters
    ----------
    rule : EventRule
        The label and its thresholds.
    sample_rate_hz : int
        Rate of the sample indices.
    window_samples, hop_samples : int
        Window length and the distance between consecutive window starts (``0 < hop <= window``).
    frame_hop_samples, frame_samples : int or None
        Frame hop and length of frame-level scores; both or neither. Needed to pass
        ``frame_scores`` to :meth:`push`; at least one frame must fit inside a segment.
    sensor_id, stream_id : str
        Only used to derive :attr:`EventUpdate.event_id`.

    Raises
    ------
    ConfigurationError
        For a geometry that cannot work.
    """

    __slots__ = (
        "_frame_first",
        "_frame_hop",
        "_frame_last",
        "_frame_samples",
        "_fresh",
        "_last_start",
        "_lead",
        "_lookback",
        "_merge_gap",
        "_min_duration",
        "_offset",
        "_onset",
        "_onset_at",
        "_peak",
        "_pending",
        "_recent",
        "_ring_pos",
        "_run",
        "_runs",
        "_started",
        "hop_samples",
        "rule",
        "sample_rate_hz",
        "sensor_id",
        "stale_windows",
        "stream_id",
        "window_samples",
    )

    def __init__(
        self,
        rule: EventRule,
        *,
        sample_rate_hz: int,
        window_samples: int,
        hop_samples: int,
        frame_hop_samples: int | None = None,
        frame_samples: int | None = None,
        sensor_id: str = "",
        stream_id: str = "",
    ) -> None:
        for name, value in (
            ("sample_rate_hz", sample_rate_hz),
            ("window_samples", window_samples),
            ("hop_samples", hop_samples),
        ):
            if not _is_count(value) or value <= 0:
                raise ConfigurationError(f"event tracker: {name}={value!r} must be an integer > 0")
        if hop_samples > window_samples:
            raise ConfigurationError(
                f"event tracker: hop_samples={hop_samples} must be <= "
                f"window_samples={window_samples} (windows must overlap or touch)"
            )
        self.rule = rule
        self.sample_rate_hz = int(sample_rate_hz)
        self.window_samples = int(window_samples)
        self.hop_samples = int(hop_samples)
        self.sensor_id = sensor_id
        self.stream_id = stream_id
        self._lead = (self.window_samples - self.hop_samples) // 2
        self._min_duration = round(rule.min_duration_s * self.sample_rate_hz)
        self._merge_gap = round(rule.merge_gap_s * self.sample_rate_hz)

        self._frame_hop = 0
        self._frame_samples = 0
        self._frame_first = 0
        self._frame_last = -1
        if (frame_hop_samples is None) != (frame_samples is None):
            raise ConfigurationError(
                "event tracker: give both frame_hop_samples and frame_samples, or neither"
            )
        if frame_hop_samples is not None and frame_samples is not None:
            for name, value in (
                ("frame_hop_samples", frame_hop_samples),
                ("frame_samples", frame_samples),
            ):
                if not _is_count(value) or value <= 0:
                    raise ConfigurationError(
                        f"event tracker: {name}={value!r} must be an integer > 0"
                    )
            self._frame_hop = int(frame_hop_samples)
            self._frame_samples = int(frame_samples)
            # Frames wholly inside the segment [lead, lead + hop) of the window.
            self._frame_first = -(-self._lead // self._frame_hop)
            self._frame_last = (self._lead + self.hop_samples - self._frame_samples) // (
                self._frame_hop
            )
            if self._frame_last < self._frame_first:
                raise ConfigurationError(
                    f"event tracker: no frame of {frame_samples} samples every "
                    f"{frame_hop_samples} fits inside a segment of {hop_samples} samples "
                    "(frame-level refinement would never apply)"
                )

        self.stale_windows = 0  # windows ignored because they were not after the previous one
        # The last smoothing_windows scores, a ring written at _ring_pos; zeros after a reset.
        self._recent = [0.0] * rule.smoothing_windows
        self._ring_pos = 0
        self._last_start: int | None = None
        self._fresh = True
        self._onset: int | None = None  # of the open event, None when there is none
        self._offset = 0  # of the open event's last active window
        self._peak = 0.0
        self._started = False
        self._pending = False  # the open event is below off_threshold and may still merge
        self._lookback = int(rule.onset_lookback_windows)
        self._onset_at = rule.on_threshold * rule.onset_ratio  # rule 5's threshold
        # For onset look-back: (segment start, start of the run >= _onset_at that reaches
        # the segment's end, or None) of the last windows with no event in progress.
        self._runs: list[tuple[int, int | None]] = []
        self._run: tuple[int, int | None] = (0, None)  # the current window's, while pushed

    def push(
        self, start_sample: int, score: float, frame_scores: npt.ArrayLike | None = None
    ) -> list[EventUpdate]:
        """Take the next window's score; returns the updates it causes (usually none).

        Parameters
        ----------
        start_sample : int
            First sample of the window; one hop after the previous window, or more (a gap).
        score : float
            The label's probability for the window, in [0, 1].
        frame_scores : np.ndarray [shape=(n_frames,)] or None
            The label's per-frame probabilities over the window, for finer onset and offset.

        Raises
        ------
        BadMessageError
            ``bad_score``, ``bad_frame_scores`` or ``window_off_grid`` (less than a hop after
            the previous window); the tracker is unchanged.
        ConfigurationError
            ``frame_scores`` given to a tracker built without frame geometry.
        """
        start = operator.index(start_sample)
        value = _score(score)
        frames = None
        if frame_scores is not None:
            if not self._frame_hop:
                raise ConfigurationError(
                    "event tracker: frame_scores need frame_hop_samples and frame_samples"
                )
            frames = _frames(frame_scores)
        return self.push_checked(start, value, frames)

    @property
    def last_start(self) -> int | None:
        """The start sample of the last window taken, None before the first."""
        return self._last_start

    def push_checked(
        self, start: int, score: float, frames: npt.NDArray[np.float64] | None
    ) -> list[EventUpdate]:
        """:meth:`push` for a caller that has checked its values already: ``score`` in [0, 1],
        ``frames`` None or a 1-D float64 array of probabilities, given only to a tracker with
        frame geometry. (The alerter checks a whole message at once; checking each label
        again was a third of its time per score.)

        Raises
        ------
        BadMessageError
            ``window_off_grid`` (less than a hop after the previous window); the tracker is
            unchanged.
        """
        value = score
        updates: list[EventUpdate] = []
        if self._last_start is not None:
            step = start - self._last_start
            if step <= 0:
                self.stale_windows += 1
                return updates
            if step < self.hop_samples:
                raise BadMessageError(
                    "window_off_grid",
                    f"window at sample {start} is {step} samples after the previous one, "
                    f"less than the hop of {self.hop_samples}",
                )
            if step > self.hop_samples:  # a gap in the stream
                self._finish(updates)
                self._reset_smoothing()
        self._fresh = self._last_start is None or start - self._last_start > self.hop_samples
        self._last_start = start
        self._recent[self._ring_pos] = value
        self._ring_pos = (self._ring_pos + 1) % len(self._recent)
        # fsum is exactly rounded, so the mean does not depend on the ring's order.
        active = self._onset is not None and not self._pending
        if self._lookback:
            self._run = self._run_of(start, value, frames)
        self._step(start, math.fsum(self._recent) / len(self._recent), frames, updates)
        if self._lookback:
            self._keep_run(active)
        return updates

    def flush(self) -> list[EventUpdate]:
        """End of the stream: ends an open event; the tracker then starts afresh."""
        updates: list[EventUpdate] = []
        self._finish(updates)
        self._reset_smoothing()
        self._last_start = None
        return updates

    def snapshot(self) -> dict[str, Any]:
        """The tracker's changing state as JSON values, to keep in a changelog-backed table.

        :meth:`restore` on a tracker with the same rule and geometry continues exactly where
        this one is: the same updates for the same later windows.
        """
        state: dict[str, Any] = {"version": _SNAPSHOT_VERSION}
        state.update(zip(SNAPSHOT_FIELDS, self.packed(), strict=True))
        state["recent"] = list(self._recent)  # a copy: the snapshot must not change later
        runs = state.pop("runs")
        if runs:  # only with onset look-back: most snapshots stay as small as before
            state["runs"] = [list(run) for run in runs]
        return state

    def packed(self) -> list[Any]:
        """The snapshot's values in :data:`SNAPSHOT_FIELDS` order, as a list: without the field
        names its JSON is less than half the snapshot's (the alerter stores one per sensor and
        label, once per batch that touched the sensor). Shares the tracker's lists: encode it
        before the next window. :func:`unpacked` makes it a snapshot again."""
        return [
            self._recent,
            self._ring_pos,
            self._last_start,
            self._fresh,
            self._onset,
            self._offset,
            self._peak,
            self._started,
            self._pending,
            self.stale_windows,
            self._runs,
        ]

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`snapshot` (of a tracker with the same geometry).

        A snapshot taken under a rule with another ``smoothing_windows`` restarts the smoothing
        from zeros, as after a gap; everything else carries over.

        Raises
        ------
        BadMessageError
            ``bad_tracker_state`` for a snapshot that is not one (the tracker is unchanged).
        """
        version = state.get("version")
        if version != _SNAPSHOT_VERSION:
            raise BadMessageError(
                "bad_tracker_state",
                f"not an event tracker snapshot of version {_SNAPSHOT_VERSION}: {version!r}",
            )
        try:
            recent = [float(x) for x in state["recent"]]
            ring_pos = int(state["ring_pos"])
            last = state["last_start"]
            onset = state["onset"]
            peak = float(state["peak"])
            values = {
                "_last_start": None if last is None else int(last),
                "_fresh": bool(state["fresh"]),
                "_onset": None if onset is None else int(onset),
                "_offset": int(state["offset"]),
                "_peak": peak,
                "_started": bool(state["started"]),
                "_pending": bool(state["pending"]),
                "stale_windows": int(state["stale_windows"]),
            }
            # Snapshots from before the look-back have no runs: it starts afresh.
            runs = [
                (int(begin), None if run is None else int(run))
                for begin, run in state.get("runs", ())
            ]
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise BadMessageError(
                "bad_tracker_state", f"not an event tracker snapshot: {exc!r}"
            ) from exc
        if not all(0.0 <= x <= 1.0 for x in (*recent, peak)):  # NaN fails too
            raise BadMessageError(
                "bad_tracker_state", "a score of the snapshot is not a probability"
            )
        for name, value in values.items():
            setattr(self, name, value)
        if len(recent) == len(self._recent) and 0 <= ring_pos < len(recent):
            self._recent, self._ring_pos = recent, ring_pos
        else:
            self._reset_smoothing()
        self._runs = runs[-self._lookback :] if self._lookback else []

    def state_bytes(self) -> int:
        """Memory held by the tracker (its slots, recent scores and look-back runs), in bytes."""
        return (
            sys.getsizeof(self)
            + sys.getsizeof(self._recent)
            + sum(sys.getsizeof(x) for x in self._recent)
            + sys.getsizeof(self._runs)
            + sum(sys.getsizeof(run) + sum(sys.getsizeof(x) for x in run) for run in self._runs)
        )

    # -- internals ---------------------------------------------------------------------------

    def _reset_smoothing(self) -> None:
        self._recent = [0.0] * len(self._recent)
        self._ring_pos = 0
        self._runs = []

    def _step(
        self,
        start: int,
        smoothed: float,
        frames: npt.NDArray[np.float64] | None,
        updates: list[EventUpdate],
    ) -> None:
        rule = self.rule
        if self._onset is None:  # no open event
            if smoothed >= rule.on_threshold:
                self._open(start, smoothed, frames, updates)
        elif not self._pending:  # an event in progress
            if smoothed >= rule.off_threshold:
                self._extend(start, smoothed, frames, updates)
            else:
                self._pending = True
                self._end_if_final(start, updates, ends_event=True)
        elif smoothed >= rule.on_threshold:  # a new run after a drop: merge or a new event
            if self._refine_onset(start, frames) - self._offset < self._merge_gap:
                self._pending = False
                self._extend(start, smoothed, frames, updates)
            else:
                self._finish(updates)
                self._open(start, smoothed, frames, updates)
        else:  # still below off_threshold (or between the thresholds) after a drop
            self._end_if_final(start, updates)

    def _refine_onset(self, start: int, frames: npt.NDArray[np.float64] | None) -> int:
        # A stream's first window owns the samples before its segment (module docstring).
        begin, first = (start, 0) if self._fresh else (start + self._lead, self._frame_first)
        # Without look-back there are no runs, and _look_back returns the onset it is given.
        if frames is None:
            return self._look_back(begin, self._runs)
        hits = np.flatnonzero(frames[first : self._frame_last + 1] >= self._onset_at)
        if not hits.size:
            return self._look_back(begin, self._runs)
        anchor = int(hits[0])
        onset = start + (first + anchor) * self._frame_hop
        if anchor:
            return onset
        return self._look_back(onset, self._runs)  # the run reaches the segment's start (rule 5)

    @staticmethod
    def _look_back(onset: int, runs: Sequence[tuple[int, int | None]]) -> int:
        """``onset``, at the start of its segment's run, moved back through ``runs`` (rule 5),
        the latest last."""
        for segment_start, run_start in reversed(runs):
            if run_start is None:
                break
            onset = run_start
            if run_start != segment_start:
                break
        return onset

    def _run_of(
        self, start: int, score: float, frames: npt.NDArray[np.float64] | None
    ) -> tuple[int, int | None]:
        """(segment start, start of the run >= the onset threshold that reaches the segment's
        end, or None) of this window (rule 5)."""
        begin, first = (start, 0) if self._fresh else (start + self._lead, self._frame_first)
        on = self._onset_at
        if frames is None:
            return begin, (begin if score >= on else None)
        segment = frames[first : self._frame_last + 1]  # shorter when frames are missing
        if not segment.size or segment[-1] < on:  # the common case, silence: no run
            return begin, None
        below = np.flatnonzero(segment < on)
        if not below.size:
            return begin, begin
        return begin, start + (first + int(below[-1]) + 1) * self._frame_hop

    def _keep_run(self, active: bool) -> None:
        """Keep this window's run for later look-backs (rule 5). A window of an event in
        progress (``active`` before this window, or after it) clears them: a look-back never
        reaches into an event nor the window that ends it."""
        if active or (self._onset is not None and not self._pending):
            self._runs = []
            return
        self._runs.append(self._run)
        if len(self._runs) > self._lookback:
            del self._runs[0]

    def _refine_offset(self, start: int, frames: npt.NDArray[np.float64] | None) -> int:
        end = start + self._lead + self.hop_samples
        if frames is None:
            return end
        hits = np.flatnonzero(
            frames[self._frame_first : self._frame_last + 1] >= self.rule.off_threshold
        )
        if not hits.size:
            return end
        return start + (self._frame_first + int(hits[-1])) * self._frame_hop + self._frame_samples

    def _open(
        self,
        start: int,
        smoothed: float,
        frames: npt.NDArray[np.float64] | None,
        updates: list[EventUpdate],
    ) -> None:
        self._onset = self._refine_onset(start, frames)
        self._peak = smoothed
        self._started = False
        self._pending = False
        self._extend(start, smoothed, frames, updates)

    def _extend(
        self,
        start: int,
        smoothed: float,
        frames: npt.NDArray[np.float64] | None,
        updates: list[EventUpdate],
    ) -> None:
        assert self._onset is not None
        self._offset = self._refine_offset(start, frames)
        self._peak = max(self._peak, smoothed)
        if not self._started and self._offset - self._onset >= self._min_duration:
            self._started = True
            updates.append(self._update("started", self._onset))

    def _end_if_final(
        self, start: int, updates: list[EventUpdate], *, ends_event: bool = False
    ) -> None:
        # Any later onset is at or after this segment's end: the gap can only grow from here.
        earliest = start + self._lead + self.hop_samples
        if self._lookback and not ends_event:  # the window that ends an event is never looked at
            # ... unless a later window's look-back can reach into this window's run (rule 5):
            # the next window looks back through this one and the lookback - 1 before it.
            earlier = self._runs[max(0, len(self._runs) - self._lookback + 1) :]
            earliest = self._look_back(earliest, [*earlier, self._run])
        if earliest - self._offset >= self._merge_gap:
            self._finish(updates)

    def _finish(self, updates: list[EventUpdate]) -> None:
        if self._onset is not None and self._started:
            updates.append(self._update("ended", self._offset))
        self._onset = None
        self._started = False
        self._pending = False

    def _update(self, kind: EventKindName, offset: int) -> EventUpdate:
        assert self._onset is not None
        label = self.rule.label
        event = Detected(
            label=label,
            onset_sample=self._onset,
            offset_sample=offset,
            sample_rate_hz=self.sample_rate_hz,
            peak_score=self._peak,
        )
        return EventUpdate(
            kind=kind,
            event_id=event_id(self.sensor_id, self.stream_id, label, self._onset),
            event=event,
        )


def detect_events(
    start_samples: npt.ArrayLike,
    scores: npt.ArrayLike,
    rule: EventRule,
    *,
    sample_rate_hz: int,
    window_samples: int,
    hop_samples: int,
    frame_scores: FrameScores | None = None,
    frame_hop_samples: int | None = None,
    frame_samples: int | None = None,
) -> list[Detected]:
    """The events of one label over a whole recording (an :class:`EventTracker`, flushed).

    Parameters
    ----------
    start_samples : np.ndarray [shape=(n_windows,)], integer
        Window starts, strictly increasing; steps of one hop, more at gaps.
    scores : np.ndarray [shape=(n_windows,)], float
        The label's probability per window.
    rule : EventRule
    sample_rate_hz, window_samples, hop_samples : int
        As for :class:`EventTracker`.
    frame_scores : np.ndarray [shape=(n_windows, n_frames)] or sequence of 1-D arrays, or None
        Per-frame probabilities of each window.
    frame_hop_samples, frame_samples : int or None
        Frame geometry, required with ``frame_scores``.

    Returns
    -------
    list[Detected]
        In onset order; exactly the ``ended`` events a tracker reports for the same windows.

    Raises
    ------
    BadMessageError
        ``bad_windows`` for arrays of the wrong shape, type, length or order; as
        :meth:`EventTracker.push` for bad scores.
    ConfigurationError
        As :class:`EventTracker`.
    """
    tracker = EventTracker(
        rule,
        sample_rate_hz=sample_rate_hz,
        window_samples=window_samples,
        hop_samples=hop_samples,
        frame_hop_samples=frame_hop_samples,
        frame_samples=frame_samples,
    )
    starts = np.asarray(start_samples)
    values = np.asarray(scores)
    if starts.ndim != 1 or values.ndim != 1 or starts.size != values.size:
        raise BadMessageError(
            "bad_windows",
            f"start_samples {starts.shape} and scores {values.shape} must be 1-D and equally long",
        )
    if starts.size and starts.dtype.kind not in "iu":
        raise BadMessageError(
            "bad_windows", f"start_samples must be integers, got dtype {starts.dtype}"
        )
    if frame_scores is not None and len(frame_scores) != starts.size:
        raise BadMessageError(
            "bad_windows",
            f"frame_scores has {len(frame_scores)} rows for {starts.size} windows",
        )
    if starts.size > 1 and not np.all(np.diff(starts) > 0):
        raise BadMessageError("bad_windows", "start_samples must be strictly increasing")
    updates: list[EventUpdate] = []
    for index in range(starts.size):
        frames = None if frame_scores is None else frame_scores[index]
        updates += tracker.push(int(starts[index]), values[index].item(), frames)
    updates += tracker.flush()
    return [update.event for update in updates if update.kind == "ended"]
