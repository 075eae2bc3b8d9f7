"""Events from window scores: hand-computed cases, and streaming == offline == a reference.

Geometry used throughout unless a test says otherwise: 1000 samples/s, windows of 1000
samples every 500, so window k starts at 500 k and speaks for the segment
[500 k + 250, 500 k + 750), except the first window of a stream (and the first window after a
gap), which also speaks for the 250 samples before that segment: [500 k, 500 k + 750). So an
event opened at such a window has its onset at the window's start, and its frames 0..5 (not only
3..5) can move that onset; offsets are never extended.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soundsentry.events.tracker import (
    Detected,
    EventRule,
    EventRules,
    EventTracker,
    EventUpdate,
    detect_events,
    event_id,
    segment_bounds,
    unpacked,
)
from soundsentry.exceptions import BadMessageError, ConfigurationError

SR = 1000
WINDOW = 1000
HOP = 500
GEOMETRY: dict[str, Any] = {"sample_rate_hz": SR, "window_samples": WINDOW, "hop_samples": HOP}
# Frames of 200 samples every 100: frames 3, 4 and 5 of a window lie inside its segment.
FRAMES: dict[str, Any] = {"frame_hop_samples": 100, "frame_samples": 200}
N_FRAMES = 9


def rule(
    on: float = 0.5,
    off: float | None = None,
    *,
    smoothing: int = 1,
    min_duration_s: float = 0.0,
    merge_gap_s: float = 0.0,
) -> EventRule:
    return EventRule(
        "smoke_alarm",
        on_threshold=on,
        off_threshold=on if off is None else off,
        smoothing_windows=smoothing,
        min_duration_s=min_duration_s,
        merge_gap_s=merge_gap_s,
    )


def spans(events: Sequence[Detected]) -> list[tuple[int, int]]:
    return [(e.onset_sample, e.offset_sample) for e in events]


def offline(
    scores: Sequence[float], event_rule: EventRule, starts: Sequence[int] | None = None
) -> list[tuple[int, int]]:
    if starts is None:
        starts = [HOP * k for k in range(len(scores))]
    return spans(detect_events(np.array(starts, dtype=np.int64), scores, event_rule, **GEOMETRY))


def pushes(
    tracker: EventTracker, scores: Sequence[float], first: int = 0
) -> list[list[EventUpdate]]:
    """The updates returned by each push, for windows first, first + 1, ... (in hops)."""
    return [tracker.push(HOP * (first + k), score) for k, score in enumerate(scores)]


# -- timing ---------------------------------------------------------------------------------


def test_segments_are_the_central_hop_of_each_window_and_tile_the_time_line() -> None:
    assert segment_bounds(0, window_samples=1000, hop_samples=500) == (250, 750)
    assert segment_bounds(500, window_samples=1000, hop_samples=500) == (750, 1250)
    assert segment_bounds(0, window_samples=1000, hop_samples=1000) == (0, 1000)
    # An odd (window - hop) puts the segment half a sample early; the tiling stays exact.
    assert segment_bounds(0, window_samples=1001, hop_samples=500) == (250, 750)
    assert segment_bounds(500, window_samples=1001, hop_samples=500) == (750, 1250)


def test_detected_converts_samples_to_seconds() -> None:
    event = Detected(
        "siren", onset_sample=4000, offset_sample=28000, sample_rate_hz=16000, peak_score=0.8
    )
    assert event.onset_s == 0.25
    assert event.offset_s == 1.75
    assert event.duration_s == 1.5


# -- hysteresis -----------------------------------------------------------------------------


def test_hysteresis_a_score_between_the_thresholds_keeps_an_event_but_never_starts_one() -> None:
    scores = [0.0, 0.5, 0.7, 0.4, 0.4, 0.2, 0.5, 0.0]
    events = detect_events(np.arange(8) * HOP, scores, rule(0.6, 0.3), **GEOMETRY)
    # Windows 2..4 are active (0.7 starts it, 0.4 >= 0.3 keeps it); 0.2 ends it; the 0.5 of
    # window 6 is below on_threshold, so no second event.
    assert spans(events) == [(1250, 2750)]
    assert events[0].peak_score == 0.7
    assert events[0].label == "smoke_alarm"
    assert offline([0.5, 0.5, 0.5, 0.5], rule(0.6, 0.3)) == []


def test_thresholds_are_inclusive_at_on_and_at_off() -> None:
    # Window 0 (the stream's first: onset 0) reaches on, window 1 stays at off.
    assert offline([0.5, 0.25, 0.24], rule(0.5, 0.25)) == [(0, 1250)]
    assert offline([0.49, 0.25], rule(0.5, 0.25)) == []


def test_without_hysteresis_every_drop_below_the_threshold_ends_the_event() -> None:
    assert offline([0.9, 0.4, 0.9, 0.9, 0.4], rule(0.5)) == [(0, 750), (1250, 2250)]


# -- smoothing ------------------------------------------------------------------------------


def test_smoothing_suppresses_a_one_window_spike() -> None:
    # Smoothed over 3: 0, 0, 0.3, 0.3, 0.3, 0, 0.
    assert offline([0.0, 0.0, 0.9, 0.0, 0.0, 0.0, 0.0], rule(0.5, 0.4, smoothing=3)) == []
    assert offline([0.0, 0.0, 0.9, 0.0, 0.0, 0.0, 0.0], rule(0.5, 0.4)) == [(1250, 1750)]


def test_smoothing_keeps_a_sustained_sound_and_delays_it_by_the_averaging() -> None:
    scores = [0.0, 0.0, 0.9, 0.9, 0.9, 0.9, 0.0, 0.0, 0.0, 0.0]
    # Smoothed over 3: 0, 0, .3, .6, .9, .9, .6, .3, 0, 0 -> active windows 3..6.
    events = detect_events(np.arange(10) * HOP, scores, rule(0.5, 0.4, smoothing=3), **GEOMETRY)
    assert spans(events) == [(1750, 3750)]
    assert events[0].peak_score == pytest.approx(0.9)


def test_smoothing_counts_the_windows_before_the_stream_as_zero() -> None:
    assert offline([0.9, 0.0, 0.0], rule(0.5, smoothing=3)) == []
    # 0.3, 0.6, 0.9: confirmed at the second window.
    assert offline([0.9, 0.9, 0.9], rule(0.5, smoothing=3)) == [(750, 1750)]


# -- minimum duration -----------------------------------------------------------------------


def test_events_shorter_than_min_duration_are_dropped_and_longer_ones_kept() -> None:
    one_second = rule(0.5, min_duration_s=1.0)  # two segments
    assert offline([0.9, 0.0, 0.0], one_second) == []  # 0 to 750: 750 samples
    assert offline([0.0, 0.9, 0.9, 0.0], one_second) == [(750, 1750)]  # exactly 1000: kept
    assert offline([0.0, 0.9, 0.9, 0.9, 0.0], one_second) == [(750, 2250)]
    assert offline([0.9, 0.9, 0.0], one_second) == [(0, 1250)]  # 1250 samples
    assert offline([0.9, 0.0, 0.9, 0.0, 0.9], one_second) == []  # 750, 500 and 500 samples
    # The first window of a stream speaks for 250 more samples: one active window there is an
    # event of 750 samples, anywhere else of 500.
    assert offline([0.9, 0.0], rule(0.5, min_duration_s=0.7)) == [(0, 750)]
    assert offline([0.0, 0.9, 0.0], rule(0.5, min_duration_s=0.7)) == []


def test_streaming_starts_once_min_duration_is_reached_with_the_first_windows_onset() -> None:
    tracker = EventTracker(rule(0.5, min_duration_s=1.4), **GEOMETRY)
    updates = pushes(tracker, [0.0, 0.7, 0.9, 0.8, 0.6, 0.0])
    # Window 1 opens the event at 750; its extent is 500 after window 1, 1000 after window 2,
    # 1500 after window 3: started then, with the onset of window 1 and the peak so far.
    assert [len(u) for u in updates] == [0, 0, 0, 1, 0, 1]
    started, ended = updates[3][0], updates[5][0]
    assert started.kind == "started"
    assert started.event == Detected(
        "smoke_alarm", onset_sample=750, offset_sample=750, sample_rate_hz=SR, peak_score=0.9
    )
    assert ended.kind == "ended"
    assert ended.event == Detected(
        "smoke_alarm", onset_sample=750, offset_sample=2750, sample_rate_hz=SR, peak_score=0.9
    )
    assert started.event_id == ended.event_id
    assert tracker.flush() == []


def test_streaming_never_reports_an_event_too_short_to_keep() -> None:
    tracker = EventTracker(rule(0.5, min_duration_s=1.5), **GEOMETRY)
    assert pushes(tracker, [0.9, 0.9, 0.0, 0.0]) == [[], [], [], []]
    assert tracker.flush() == []
    tracker = EventTracker(rule(0.5, min_duration_s=1.5), **GEOMETRY)
    assert pushes(tracker, [0.0, 0.9, 0.9]) == [[], [], []]
    assert tracker.flush() == []  # open at the end but only 1000 samples long


def test_with_no_min_duration_an_event_starts_at_its_first_window() -> None:
    tracker = EventTracker(rule(0.5), **GEOMETRY)
    updates = pushes(tracker, [0.0, 0.9])
    assert [u.kind for u in updates[1]] == ["started"]
    assert updates[1][0].event.onset_sample == 750


# -- merging --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("merge_gap_s", "expected"),
    [
        (0.0, [(0, 1250), (1750, 2750)]),
        (0.4, [(0, 1250), (1750, 2750)]),
        (0.5, [(0, 1250), (1750, 2750)]),  # the gap is exactly 500 samples: not shorter
        (0.6, [(0, 2750)]),
        (5.0, [(0, 2750)]),
    ],
)
def test_bursts_closer_than_merge_gap_are_one_event(
    merge_gap_s: float, expected: list[tuple[int, int]]
) -> None:
    scores = [0.9, 0.9, 0.1, 0.9, 0.9, 0.1]  # gap: onset 1750 - offset 1250 = 500 samples
    assert offline(scores, rule(0.5, 0.3, merge_gap_s=merge_gap_s)) == expected


def test_a_gap_with_scores_between_the_thresholds_merges_but_a_rise_to_off_does_not_resume() -> (
    None
):
    # After the drop (0.1) the event only resumes at >= on; the 0.4 does not count as active:
    # the gap is onset 1750 - offset 750 = 1000.
    scores = [0.9, 0.1, 0.4, 0.9, 0.1]
    assert offline(scores, rule(0.6, 0.3, merge_gap_s=1.2)) == [(0, 2250)]
    assert offline(scores, rule(0.6, 0.3, merge_gap_s=1.0)) == [(0, 750), (1750, 2250)]


def test_streaming_ends_an_event_as_soon_as_the_gap_exceeds_merge_gap() -> None:
    tracker = EventTracker(rule(0.5, 0.3, merge_gap_s=1.2), **GEOMETRY)
    updates = pushes(tracker, [0.9, 0.9, 0.1, 0.1, 0.1, 0.1])
    # Offset 1250. Segment ends after the drop: 1750 (gap >= 500), 2250 (>= 1000),
    # 2750 (>= 1500 >= 1200): ended at window 4.
    assert [[u.kind for u in batch] for batch in updates] == [
        ["started"],
        [],
        [],
        [],
        ["ended"],
        [],
    ]
    assert updates[4][0].event.offset_sample == 1250


def test_streaming_with_no_merge_gap_ends_at_the_first_window_below_off() -> None:
    tracker = EventTracker(rule(0.5, 0.3), **GEOMETRY)
    updates = pushes(tracker, [0.9, 0.35, 0.2])
    assert [[u.kind for u in batch] for batch in updates] == [["started"], [], ["ended"]]
    assert updates[2][0].event.offset_sample == 1250


def test_merging_counts_towards_min_duration_and_starts_the_merged_event() -> None:
    event_rule = rule(0.5, 0.3, min_duration_s=1.5, merge_gap_s=0.6)
    tracker = EventTracker(event_rule, **GEOMETRY)
    updates = pushes(tracker, [0.9, 0.0, 0.8, 0.0, 0.0])
    # Two one-window bursts (0-750, the stream's first window, and 1250-1750), each too short,
    # merge (gap 500) into 0-1750.
    assert [[u.kind for u in batch] for batch in updates] == [[], [], ["started"], [], ["ended"]]
    assert updates[2][0].event.onset_sample == 0
    assert updates[4][0].event == Detected(
        "smoke_alarm", onset_sample=0, offset_sample=1750, sample_rate_hz=SR, peak_score=0.9
    )
    assert offline([0.9, 0.0, 0.8, 0.0, 0.0], event_rule) == [(0, 1750)]


def test_a_new_burst_after_a_long_gap_ends_the_old_event_and_starts_a_new_one_in_one_push() -> None:
    # merge_gap 1.2 s, offset 750: windows 1 and 2 end their segments 500 and 1000 after it,
    # window 3 1500 after it: the event is ended there, before the burst of window 4.
    tracker = EventTracker(rule(0.5, merge_gap_s=1.2), **GEOMETRY)
    updates = pushes(tracker, [0.9, 0.0, 0.0, 0.0, 0.9])
    assert [[u.kind for u in batch] for batch in updates] == [
        ["started"],
        [],
        [],
        ["ended"],
        ["started"],
    ]
    # With frame refinement pushing the new onset late, the end and the new start can come
    # from the same window.
    tracker = EventTracker(rule(0.5, merge_gap_s=1.2), **GEOMETRY, **FRAMES)
    quiet = np.zeros(N_FRAMES)
    late = np.array([0, 0, 0, 0, 0, 0.9, 0, 0, 0])  # frame 5: [s + 500, s + 700)
    assert tracker.push(0, 0.9, late)[0].kind == "started"  # onset 500, offset 700
    assert tracker.push(500, 0.0, quiet) == []  # segment end 1250: gap 550
    assert tracker.push(1000, 0.0, quiet) == []  # segment end 1750: gap 1050
    both = tracker.push(1500, 0.9, late)  # onset 2000: gap 1300 >= 1200
    assert [u.kind for u in both] == ["ended", "started"]
    assert (both[0].event.onset_sample, both[0].event.offset_sample) == (500, 700)
    assert both[1].event.onset_sample == 2000


# -- boundaries -----------------------------------------------------------------------------


def test_an_event_at_the_very_start_begins_at_the_streams_start() -> None:
    # The first window speaks for [0, 750), not only for its segment [250, 750).
    assert offline([0.9, 0.9, 0.0], rule(0.5)) == [(0, 1250)]
    (started,) = EventTracker(rule(0.5), **GEOMETRY).push(0, 0.9)
    assert started.event.onset_sample == 0
    # A stream need not start at sample 0: its first window still begins the event.
    assert offline([0.9, 0.0], rule(0.5), [2000, 2500]) == [(2000, 2750)]
    # So does the first window after a gap (1500 > one hop after 0), but no later window.
    assert offline([0.0, 0.9, 0.9], rule(0.5), [0, 1500, 2000]) == [(1500, 2750)]
    assert offline([0.0, 0.9, 0.9], rule(0.5), [0, 500, 1000]) == [(750, 1750)]


def test_an_event_open_at_the_end_is_ended_at_flush_at_the_last_segment_end() -> None:
    tracker = EventTracker(rule(0.5, merge_gap_s=10.0), **GEOMETRY)
    updates = pushes(tracker, [0.0, 0.9, 0.9])
    assert [[u.kind for u in batch] for batch in updates] == [[], ["started"], []]
    (ended,) = tracker.flush()
    assert ended.kind == "ended"
    assert (ended.event.onset_sample, ended.event.offset_sample) == (750, 1750)
    assert offline([0.0, 0.9, 0.9], rule(0.5)) == [(750, 1750)]


def test_an_event_waiting_to_merge_is_ended_at_flush_at_its_offset() -> None:
    tracker = EventTracker(rule(0.5, merge_gap_s=10.0), **GEOMETRY)
    pushes(tracker, [0.9, 0.9, 0.0, 0.0])
    (ended,) = tracker.flush()
    assert (ended.event.onset_sample, ended.event.offset_sample) == (0, 1250)


def test_empty_input_gives_no_events() -> None:
    assert detect_events([], [], rule(0.5), **GEOMETRY) == []
    assert detect_events(np.array([], dtype=np.int64), np.array([]), rule(0.5), **GEOMETRY) == []
    assert EventTracker(rule(0.5), **GEOMETRY).flush() == []


def test_a_flushed_tracker_starts_afresh() -> None:
    tracker = EventTracker(rule(0.5, smoothing=2), **GEOMETRY)
    pushes(tracker, [0.9, 0.9, 0.9])
    assert [u.kind for u in tracker.flush()] == ["ended"]
    assert tracker.flush() == []
    # Smoothing restarts from zeros: 0.45 then 0.9.
    updates = pushes(tracker, [0.9, 0.9])
    assert [[u.kind for u in batch] for batch in updates] == [[], ["started"]]
    assert updates[1][0].event.onset_sample == 750


# -- gaps and order -------------------------------------------------------------------------


def test_a_gap_in_the_stream_ends_the_event_and_restarts_smoothing() -> None:
    # The first window after the gap (3000) begins the new event at its own start.
    starts = [0, 500, 1000, 3000, 3500]
    assert offline([0.9] * 5, rule(0.5, merge_gap_s=10.0), starts) == [(0, 1750), (3000, 4250)]
    # One missing window is already a gap.
    one_missing, expected = [0, 500, 1500], [(0, 1250), (1500, 2250)]
    assert offline([0.9] * 3, rule(0.5, merge_gap_s=10.0), one_missing) == expected
    # Smoothing over 2 restarts after the gap: 0.45, 0.9, 0.9 | 0.45, 0.9. The events are
    # confirmed at the second window of each piece, which only speaks for its segment.
    assert offline([0.9] * 5, rule(0.6, smoothing=2), starts) == [(750, 1750), (3750, 4250)]


def test_streaming_ends_the_open_event_when_the_gap_window_arrives() -> None:
    tracker = EventTracker(rule(0.5, merge_gap_s=10.0), **GEOMETRY)
    pushes(tracker, [0.9, 0.9])
    updates = tracker.push(5000, 0.9)
    assert [u.kind for u in updates] == ["ended", "started"]
    assert (updates[0].event.onset_sample, updates[0].event.offset_sample) == (0, 1250)
    assert updates[1].event.onset_sample == 5000  # the first window after the gap


def test_a_gap_discards_an_open_event_shorter_than_min_duration() -> None:
    tracker = EventTracker(rule(0.5, min_duration_s=1.0), **GEOMETRY)
    assert tracker.push(0, 0.9) == []
    assert tracker.push(2000, 0.0) == []
    assert tracker.flush() == []


def test_repeated_and_late_windows_are_ignored_and_counted() -> None:
    tracker = EventTracker(rule(0.5), **GEOMETRY)
    pushes(tracker, [0.0, 0.0, 0.9])
    assert tracker.push(1000, 0.0) == []  # a repeat of the last window
    assert tracker.push(0, 0.9) == []  # late
    assert tracker.stale_windows == 2
    assert [u.kind for u in tracker.push(1500, 0.0)] == ["ended"]


def test_a_window_less_than_a_hop_after_the_previous_one_is_rejected_and_changes_nothing() -> None:
    tracker = EventTracker(rule(0.5), **GEOMETRY)
    pushes(tracker, [0.9])
    with pytest.raises(BadMessageError, match="250 samples after the previous one") as caught:
        tracker.push(250, 0.0)
    assert caught.value.reason == "window_off_grid"
    assert [u.kind for u in tracker.push(500, 0.0)] == ["ended"]


def test_offline_rejects_windows_out_of_order() -> None:
    with pytest.raises(BadMessageError, match="strictly increasing") as caught:
        detect_events([0, 1000, 500], [0.1, 0.2, 0.3], rule(0.5), **GEOMETRY)
    assert caught.value.reason == "bad_windows"


# -- frame-level refinement -----------------------------------------------------------------


def frames(*hot: int, value: float = 0.9) -> np.ndarray:
    scores = np.full(N_FRAMES, 0.1)
    scores[list(hot)] = value
    return scores


def test_frame_scores_move_onset_and_offset_inside_the_segments() -> None:
    # Event over windows 1 (segment 750-1250) and 2 (segment 1250-1750). Frames 3..5 of a
    # window lie inside its segment, frame f covering [s + 100 f, s + 100 f + 200).
    window_frames = [
        frames(0, 1, 2),  # window 0 is inactive; its frames do not matter
        frames(0, 4, 5, 8),  # frames 0 and 8 lie outside the segment: first inside is 4
        frames(3, 5, value=0.4),  # 0.4 >= off: last is frame 5
        frames(),
    ]
    events = detect_events(
        np.arange(4) * HOP,
        [0.0, 0.9, 0.9, 0.0],
        rule(0.6, 0.3),
        frame_scores=window_frames,
        **GEOMETRY,
        **FRAMES,
    )
    assert spans(events) == [(500 + 400, 1000 + 500 + 200)]


def test_frame_onset_needs_on_threshold_and_offset_needs_off_threshold() -> None:
    window_frames = np.stack([frames(3, 5, value=0.4), frames(4, value=0.35)])
    # No frame of window 0 reaches 0.6: its segment start stays (the first window's: 0); the
    # last frame of window 1 at >= 0.3 is frame 4: offset 500 + 400 + 200.
    events = detect_events(
        [0, 500], [0.9, 0.9], rule(0.6, 0.3), frame_scores=window_frames, **GEOMETRY, **FRAMES
    )
    assert spans(events) == [(0, 1100)]


def test_without_a_qualifying_frame_the_segment_bounds_stay() -> None:
    window_frames = [frames(), frames()]
    events = detect_events(
        [0, 500], [0.9, 0.9], rule(0.5), frame_scores=window_frames, **GEOMETRY, **FRAMES
    )
    assert spans(events) == [(0, 1250)]  # the first window's segment starts at its start
    # Frames outside the segment (0..2, 6..8) of a window that is not a stream's first never
    # count, even when hot.
    hot_outside = [frames(0, 1, 2, 6, 7, 8)] * 3
    events = detect_events(
        [0, 500, 1000],
        [0.0, 0.9, 0.9],
        rule(0.5),
        frame_scores=hot_outside,
        **GEOMETRY,
        **FRAMES,
    )
    assert spans(events) == [(750, 1750)]


def test_a_single_window_event_refines_both_ends_within_one_segment() -> None:
    tracker = EventTracker(rule(0.5), **GEOMETRY, **FRAMES)
    (started,) = tracker.push(0, 0.9, frames(4))
    (ended,) = tracker.push(500, 0.0, frames())
    assert started.event.onset_sample == ended.event.onset_sample == 400
    assert ended.event.offset_sample == 600


def test_frames_before_the_segment_set_the_onset_only_in_the_first_window_of_a_stream() -> None:
    # The first window speaks for [0, 750): frames 0..5 lie inside it, frame 1 is [100, 300).
    tracker = EventTracker(rule(0.5), **GEOMETRY, **FRAMES)
    (started,) = tracker.push(0, 0.9, frames(1))
    assert started.event.onset_sample == 100
    # Frame 6 [600, 800) reaches past the segment: no frame qualifies, the onset stays at 0.
    tracker = EventTracker(rule(0.5), **GEOMETRY, **FRAMES)
    (started,) = tracker.push(0, 0.9, frames(6))
    assert started.event.onset_sample == 0
    # A later window speaks for [750, 1250) only: its frame 1 [600, 800) does not count.
    tracker = EventTracker(rule(0.5), **GEOMETRY, **FRAMES)
    assert tracker.push(0, 0.0, frames()) == []
    (started,) = tracker.push(500, 0.9, frames(1))
    assert started.event.onset_sample == 750
    # The first window after a gap is a first window again: frame 1 gives 2000 + 100.
    (ended, started) = tracker.push(2000, 0.9, frames(1))
    assert (ended.kind, ended.event.onset_sample, ended.event.offset_sample) == ("ended", 750, 1250)
    assert (started.kind, started.event.onset_sample) == ("started", 2100)
    events = detect_events(
        [0, 500, 2000],
        [0.0, 0.9, 0.9],
        rule(0.5),
        frame_scores=[frames(), frames(1), frames(1)],
        **GEOMETRY,
        **FRAMES,
    )
    assert spans(events) == [(750, 1250), (2100, 2750)]


def test_merge_gaps_are_measured_between_refined_times() -> None:
    # Segment bounds give a gap of 500 (1250 -> 1750); frames give 1000 (1000 -> 2000).
    window_frames = [frames(3), frames(3), frames(), frames(5), frames(5)]
    scores = [0.9, 0.9, 0.0, 0.9, 0.9]
    assert offline(scores, rule(0.5, merge_gap_s=0.6)) == [(0, 2750)]
    kwargs: dict[str, Any] = {"frame_scores": window_frames, **GEOMETRY, **FRAMES}
    merged = detect_events(np.arange(5) * HOP, scores, rule(0.5, merge_gap_s=1.2), **kwargs)
    assert spans(merged) == [(300, 2700)]
    split = detect_events(np.arange(5) * HOP, scores, rule(0.5, merge_gap_s=0.6), **kwargs)
    assert spans(split) == [(300, 1000), (2000, 2700)]


@pytest.mark.parametrize(
    ("merge_gap_s", "expected"),
    [(0.9, [(300, 500), (1400, 1600)]), (0.91, [(300, 1600)])],
)
def test_a_refined_gap_of_exactly_merge_gap_separates(
    merge_gap_s: float, expected: list[tuple[int, int]]
) -> None:
    # Offset 500 (frame 3 of window 0); window 1 is quiet (its segment ends 750 later, so the
    # event is still waiting); onset 1400 (frame 4 of window 2): a gap of exactly 900.
    events = detect_events(
        [0, 500, 1000],
        [0.9, 0.0, 0.9],
        rule(0.5, merge_gap_s=merge_gap_s),
        frame_scores=[frames(3), frames(), frames(4)],
        **GEOMETRY,
        **FRAMES,
    )
    assert spans(events) == expected


# -- onset look-back (rule 5) -----------------------------------------------------------------


def lookback(n: int, on: float = 0.5, **kwargs: Any) -> EventRule:
    return replace(rule(on, **kwargs), onset_lookback_windows=n)


def test_look_back_moves_a_smoothed_onset_to_the_window_where_the_sound_began() -> None:
    # Smoothed over 2 windows: 0, 0, 0.3, 0.6, 0.6, 0.3. The run starts at window 3 (segment
    # 1750-2250), but window 2 (segment 1250-1750) already scored 0.6 >= on.
    scores = [0.0, 0.0, 0.6, 0.6, 0.6, 0.0]
    assert offline(scores, lookback(0, smoothing=2)) == [(1750, 2750)]
    assert offline(scores, lookback(1, smoothing=2)) == [(1250, 2750)]


def test_look_back_follows_frames_into_the_window_before() -> None:
    # Window 1 scores 0.3 < on but its frames 4 and 5 ([900, 1100), [1000, 1200)) are hot, up to
    # its segment's end; window 2's first frame inside its segment (3) is hot too.
    window_frames = [frames(), frames(4, 5), frames(3, 4, 5), frames()]
    kwargs: dict[str, Any] = {"frame_scores": window_frames, **GEOMETRY, **FRAMES}
    starts, scores = np.arange(4) * HOP, [0.0, 0.3, 0.9, 0.0]
    assert spans(detect_events(starts, scores, lookback(0), **kwargs)) == [(1300, 1700)]
    assert spans(detect_events(starts, scores, lookback(1), **kwargs)) == [(900, 1700)]


def test_look_back_stops_where_the_run_stops() -> None:
    # The onset frame (4) is not the segment's first: the sound began inside this segment.
    late = [frames(), frames(3, 4, 5), frames(4, 5), frames()]
    # Window 1's last frame is cold: its run does not reach window 2's segment.
    broken = [frames(), frames(3, 4), frames(3, 4, 5), frames()]
    starts, scores = np.arange(4) * HOP, [0.0, 0.3, 0.9, 0.0]
    for window_frames, onset in ((late, 1400), (broken, 1300)):
        events = detect_events(
            starts, scores, lookback(3), frame_scores=window_frames, **GEOMETRY, **FRAMES
        )
        assert spans(events)[0][0] == onset


def test_look_back_goes_at_most_its_number_of_windows() -> None:
    scores = [0.0, 0.6, 0.6, 0.6, 0.6, 0.0]  # smoothed over 3: 0.2, 0.4, 0.6 at window 3
    assert offline(scores, lookback(1, smoothing=3))[0][0] == 1250
    assert offline(scores, lookback(2, smoothing=3))[0][0] == 750
    assert offline(scores, lookback(8, smoothing=3))[0][0] == 750  # window 0 scored 0


def test_look_back_never_reaches_into_the_previous_event_nor_across_a_gap() -> None:
    # Window 2 ends the first event (smoothed 0.3 < 0.5); window 3's onset may not move into it.
    scores = [0.6, 0.6, 0.0, 0.6, 0.6, 0.0]
    events = offline(scores, lookback(3, smoothing=2))
    assert [onset for onset, _ in events] == [0, 1750]
    # A gap between windows 1 (at 500) and 2 (at 2000): window 3's look-back stops at the gap
    # (window 2 is a stream's first again, and starts its own segment at 2000).
    starts = [0, 500, 2000, 2500, 3000]
    assert offline([0.0, 0.6, 0.6, 0.6, 0.0], lookback(3, smoothing=2), starts) == [(2000, 3250)]


@pytest.mark.parametrize("windows", [0, 1])
def test_streaming_waits_to_end_an_event_while_a_look_back_could_still_merge(windows: int) -> None:
    # Event over windows 0-1 (offset 1250). Window 3 (segment 1750-2250) scores below on, but
    # its frames are hot to its end: a run starting at window 4 may look back to 1750, a gap of
    # 500 < merge_gap 600. Without look-back any later onset is >= 2250: over at window 3.
    tracker = EventTracker(lookback(windows, merge_gap_s=0.6), **GEOMETRY, **FRAMES)
    assert [u.kind for u in tracker.push(0, 0.9)] == ["started"]
    assert tracker.push(HOP, 0.9) == []
    assert tracker.push(2 * HOP, 0.0) == []
    hot = frames(3, 4, 5)
    if not windows:
        (ended,) = tracker.push(3 * HOP, 0.3, hot)
        assert (ended.event.onset_sample, ended.event.offset_sample) == (0, 1250)
        return
    assert tracker.push(3 * HOP, 0.3, hot) == []  # may still merge: not ended
    assert tracker.push(4 * HOP, 0.9, hot) == []  # merged: the event goes on
    (ended,) = tracker.flush()
    assert (ended.event.onset_sample, ended.event.offset_sample) == (0, 2700)


def test_a_look_back_state_survives_a_snapshot() -> None:
    tracker = EventTracker(lookback(2, smoothing=2), **GEOMETRY)
    pushes(tracker, [0.0, 0.0, 0.6])
    state = json.loads(json.dumps(tracker.snapshot()))
    restored = EventTracker(lookback(2, smoothing=2), **GEOMETRY)
    restored.restore(state)
    (started,) = restored.push(3 * HOP, 0.6)
    assert started.event.onset_sample == 1250
    # Snapshots without look-back runs (older ones, or other rules) restore with none.
    assert "runs" not in EventTracker(rule(), **GEOMETRY).snapshot()


def test_frame_geometry_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="both frame_hop_samples and frame_samples"):
        EventTracker(rule(0.5), **GEOMETRY, frame_hop_samples=100)
    with pytest.raises(ConfigurationError, match="fits inside a segment of 500 samples"):
        EventTracker(rule(0.5), **GEOMETRY, frame_hop_samples=100, frame_samples=600)
    with pytest.raises(ConfigurationError, match="frame_hop_samples=0"):
        EventTracker(rule(0.5), **GEOMETRY, frame_hop_samples=0, frame_samples=200)
    with pytest.raises(ConfigurationError, match="frame_scores need frame_hop_samples"):
        EventTracker(rule(0.5), **GEOMETRY).push(0, 0.9, frames())


@pytest.mark.parametrize(
    "bad",
    [np.full((2, 3), 0.5), np.array([0.1, np.nan]), np.array([0.1, 1.5]), ["x", "y"]],
    ids=["2-D", "nan", "above-one", "text"],
)
def test_bad_frame_scores_are_rejected(bad: object) -> None:
    tracker = EventTracker(rule(0.5), **GEOMETRY, **FRAMES)
    with pytest.raises(BadMessageError) as caught:
        tracker.push(0, 0.9, bad)  # type: ignore[arg-type]
    assert caught.value.reason == "bad_frame_scores"


# -- scores and windows ---------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-0.1, 1.01, math.nan, math.inf, "0.5", True])
def test_bad_scores_are_rejected(bad: object) -> None:
    tracker = EventTracker(rule(0.5), **GEOMETRY)
    with pytest.raises(BadMessageError, match="not a probability") as caught:
        tracker.push(0, bad)  # type: ignore[arg-type]
    assert caught.value.reason == "bad_score"


def test_numpy_scalars_are_accepted() -> None:
    tracker = EventTracker(rule(0.5), **GEOMETRY)
    (started,) = tracker.push(np.int64(0), np.float32(0.75))  # type: ignore[arg-type]
    assert started.event.onset_sample == 0
    assert type(started.event.onset_sample) is int


@pytest.mark.parametrize(
    ("starts", "scores", "message"),
    [
        ([0, 500], [0.1], "must be 1-D and equally long"),
        ([0.0, 500.0], [0.1, 0.2], "must be integers"),
        ([[0, 500]], [[0.1, 0.2]], "must be 1-D"),
    ],
)
def test_offline_rejects_malformed_arrays(
    starts: list[Any], scores: list[Any], message: str
) -> None:
    with pytest.raises(BadMessageError, match=message) as caught:
        detect_events(starts, scores, rule(0.5), **GEOMETRY)
    assert caught.value.reason == "bad_windows"


def test_offline_rejects_frame_scores_of_the_wrong_length() -> None:
    with pytest.raises(BadMessageError, match="2 rows for 3 windows"):
        detect_events(
            [0, 500, 1000],
            [0.1] * 3,
            rule(0.5),
            frame_scores=[frames(), frames()],
            **GEOMETRY,
            **FRAMES,
        )


# -- identity -------------------------------------------------------------------------------


def test_event_ids_are_deterministic_and_depend_on_every_part() -> None:
    golden = "3754928efbebcdb0e9094f05dacd18b6"  # changing the scheme breaks replay dedupe
    assert event_id("sensor-1", "stream-a", "smoke_alarm", 250) == golden
    others = {
        event_id("sensor-2", "stream-a", "smoke_alarm", 250),
        event_id("sensor-1", "stream-b", "smoke_alarm", 250),
        event_id("sensor-1", "stream-a", "siren", 250),
        event_id("sensor-1", "stream-a", "smoke_alarm", 251),
        # The separator keeps the parts apart.
        event_id("sensor-1stream-a", "", "smoke_alarm", 250),
    }
    assert golden not in others
    assert len(others) == 5
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in others)


def test_updates_carry_the_id_of_their_sensor_stream_label_and_onset() -> None:
    def run() -> list[EventUpdate]:
        tracker = EventTracker(rule(0.5), **GEOMETRY, sensor_id="sensor-1", stream_id="stream-a")
        return [u for batch in pushes(tracker, [0.9, 0.0]) for u in batch]

    first, again = run(), run()
    assert first == again
    assert {u.event_id for u in first} == {event_id("sensor-1", "stream-a", "smoke_alarm", 0)}


# -- rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"label": ""}, "label '' must be a non-empty string"),
        ({"label": " siren"}, "without surrounding spaces"),
        ({"on_threshold": 0.0}, r"on_threshold=0.0 must be a number in \(0, 1\]"),
        ({"on_threshold": 1.5}, r"on_threshold=1.5 must be a number in \(0, 1\]"),
        ({"on_threshold": math.nan}, "on_threshold=nan"),
        ({"off_threshold": -0.1}, r"off_threshold=-0.1 must be a number in \[0, 1\]"),
        ({"off_threshold": 0.7}, "off_threshold=0.7 must be <= on_threshold=0.6"),
        ({"smoothing_windows": 0}, "smoothing_windows=0 must be a whole number >= 1"),
        ({"smoothing_windows": 2.0}, "smoothing_windows=2.0 must be a whole number"),
        ({"min_duration_s": -1.0}, "min_duration_s=-1.0 must be a finite number of seconds"),
        ({"merge_gap_s": math.inf}, "merge_gap_s=inf must be a finite number of seconds"),
        ({"merge_gap_s": "1"}, "merge_gap_s='1' must be a finite number"),
        ({"onset_lookback_windows": -1}, r"onset_lookback_windows=-1 must be a whole number in 0"),
        ({"onset_lookback_windows": 9}, "onset_lookback_windows=9 must be a whole number"),
        ({"onset_lookback_windows": 1.5}, "onset_lookback_windows=1.5 must be a whole number"),
        ({"onset_lookback_windows": True}, "onset_lookback_windows=True must be a whole number"),
        ({"onset_ratio": 0.0}, r"onset_ratio=0.0 must be a number in \(0, 1\]"),
        ({"onset_ratio": 1.5}, r"onset_ratio=1.5 must be a number in \(0, 1\]"),
    ],
)
def test_invalid_rules_are_rejected_naming_the_problem(
    overrides: dict[str, Any], message: str
) -> None:
    fields: dict[str, Any] = {"label": "siren", "on_threshold": 0.6, "off_threshold": 0.4}
    fields.update(overrides)
    with pytest.raises(ConfigurationError, match=message):
        EventRule(**fields)


def test_an_invalid_rule_names_its_label() -> None:
    with pytest.raises(ConfigurationError, match="event rule 'glass_break': off_threshold"):
        EventRule("glass_break", on_threshold=0.3, off_threshold=0.5)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sample_rate_hz": 0}, "sample_rate_hz=0 must be an integer > 0"),
        ({"window_samples": 1000.0}, "window_samples=1000.0 must be an integer"),
        ({"hop_samples": 2000}, "hop_samples=2000 must be <= window_samples=1000"),
    ],
)
def test_invalid_tracker_geometry_is_rejected(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        EventTracker(rule(0.5), **{**GEOMETRY, **overrides})


def test_event_rules_give_each_label_its_rule_or_the_default() -> None:
    siren = EventRule("siren", on_threshold=0.8, off_threshold=0.6, min_duration_s=2.0)
    rules = EventRules(
        default=EventRule("*", on_threshold=0.5, off_threshold=0.3), by_label={"siren": siren}
    )
    assert rules.for_label("siren") is siren
    assert rules.for_label("gunshot") == EventRule("gunshot", on_threshold=0.5, off_threshold=0.3)
    with pytest.raises(ConfigurationError, match="the rule under 'sirens' is for label 'siren'"):
        EventRules(default=siren, by_label={"sirens": siren})


def test_state_is_small_and_does_not_grow() -> None:
    tracker = EventTracker(rule(0.5, 0.3, smoothing=3, merge_gap_s=2.0), **GEOMETRY, **FRAMES)
    rng = np.random.default_rng(0)
    sizes = set()
    for k in range(2000):
        tracker.push(HOP * k, float(rng.random()), rng.random(N_FRAMES))
        sizes.add(tracker.state_bytes())
    assert max(sizes) < 512


# -- streaming == offline == reference ------------------------------------------------------


@dataclass(frozen=True)
class Ref:
    onset: int
    offset: int
    peak: float
    last_window: int  # index of the last active window


def reference_onset(
    starts: Sequence[int],
    scores: Sequence[float],
    on: float,
    window_frames: Sequence[np.ndarray] | None,
    *,
    i: int,
    first: bool,
    earlier: Sequence[tuple[int, bool]],
) -> int:
    """The onset of a run starting at window ``i`` (the first of its piece when ``first``);
    ``earlier``: the windows the onset may move back into, latest first (rule 5)."""
    lead = (WINDOW - HOP) // 2

    def segment_frames(j: int, j_first: bool) -> list[int]:
        """Starts of the frames wholly inside window j's segment (the first window of a piece
        speaks for [start, start + lead + HOP))."""
        begin = starts[j] if j_first else starts[j] + lead
        end = starts[j] + lead + HOP
        return [
            x for x in (starts[j] + 100 * f for f in range(N_FRAMES)) if begin <= x <= end - 200
        ]

    def hot(j: int, frame_start: int) -> bool:
        assert window_frames is not None
        return bool(window_frames[j][(frame_start - starts[j]) // 100] >= on)

    result = starts[i] if first else starts[i] + lead
    if window_frames is not None:
        for k, frame_start in enumerate(segment_frames(i, first)):
            if hot(i, frame_start):
                if k:
                    return frame_start
                result = frame_start  # the segment's first frame: the run may go further back
                break
    for j, j_first in earlier:
        j_begin = starts[j] if j_first else starts[j] + lead
        if window_frames is None:
            if scores[j] < on:
                break
            result = j_begin
            continue
        run = segment_frames(j, j_first)
        if not hot(j, run[-1]):
            break
        while run and hot(j, run[-1]):
            result = run.pop()
        if run:
            break
        result = j_begin
    return result


def reference(
    starts: Sequence[int],
    scores: Sequence[float],
    event_rule: EventRule,
    window_frames: Sequence[np.ndarray] | None,
) -> list[Ref]:
    """The module docstring's offline definition, written out independently and slowly."""
    n = event_rule.smoothing_windows
    lead = (WINDOW - HOP) // 2

    def onset(i: int, first: bool, earlier: Sequence[tuple[int, bool]]) -> int:
        return reference_onset(
            starts,
            scores,
            event_rule.on_threshold * event_rule.onset_ratio,
            window_frames,
            i=i,
            first=first,
            earlier=earlier,
        )

    def offset(i: int) -> int:
        end = starts[i] + lead + HOP
        if window_frames is None:
            return end
        for f in reversed(range(N_FRAMES)):
            frame_start = starts[i] + 100 * f
            inside = frame_start >= end - HOP and frame_start + 200 <= end
            if inside and window_frames[i][f] >= event_rule.off_threshold:
                return frame_start + 200
        return end

    # Contiguous pieces of the stream (a step of more than one hop is a gap).
    pieces: list[list[int]] = []
    for i in range(len(starts)):
        if not pieces or starts[i] - starts[i - 1] > HOP:
            pieces.append([])
        pieces[-1].append(i)
    events: list[Ref] = []
    for piece in pieces:
        padded = [0.0] * (n - 1) + [scores[i] for i in piece]
        smoothed = [math.fsum(padded[k : k + n]) / n for k in range(len(piece))]
        runs: list[Ref] = []
        k = 0
        free = 0  # the first window of the piece the look-back may use (after the last run's drop)
        while k < len(piece):
            if smoothed[k] < event_rule.on_threshold:
                k += 1
                continue
            j = k
            while j + 1 < len(piece) and smoothed[j + 1] >= event_rule.off_threshold:
                j += 1
            back = range(k - 1, max(free, k - event_rule.onset_lookback_windows) - 1, -1)
            earlier = [(piece[b], b == 0) for b in back]
            run = Ref(
                onset(piece[k], k == 0, earlier),
                offset(piece[j]),
                max(smoothed[k : j + 1]),
                piece[j],
            )
            free = j + 2  # the window after j ended the run: it is not looked at either
            merge_gap = round(event_rule.merge_gap_s * SR)
            if runs and run.onset - runs[-1].offset < merge_gap:
                previous = runs.pop()
                run = Ref(previous.onset, run.offset, max(previous.peak, run.peak), piece[j])
            runs.append(run)
            k = j + 1
        min_duration = round(event_rule.min_duration_s * SR)
        events += [r for r in runs if r.offset - r.onset >= min_duration]
    return events


GRID = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
probabilities = st.one_of(st.sampled_from(GRID), st.floats(0.0, 1.0))


@st.composite
def cases(draw: st.DrawFn) -> tuple[EventRule, list[int], list[float], list[np.ndarray] | None]:
    on = draw(st.sampled_from(GRID[1:]))
    off = draw(st.sampled_from([x for x in GRID if x <= on]))
    event_rule = EventRule(
        "glass_break",
        on_threshold=on,
        off_threshold=off,
        smoothing_windows=draw(st.integers(1, 4)),
        min_duration_s=draw(st.sampled_from([0.0, 0.25, 0.5, 0.7, 1.0, 1.5, 2.5])),
        merge_gap_s=draw(st.sampled_from([0.0, 0.3, 0.5, 0.6, 1.0, 1.3, 2.0, 3.0, 6.0])),
        onset_lookback_windows=draw(st.sampled_from([0, 0, 1, 2, 3])),
        onset_ratio=draw(st.sampled_from([1.0, 1.0, 0.75, 0.5])),
    )
    # Mostly long streams (short ones come from shrinking and from the size draw).
    size = draw(st.sampled_from([0, 1, 2, 5, 20, 40, 40, 80, 80, 80]))
    steps = draw(st.lists(st.sampled_from([1] * 12 + [2, 5]), min_size=size, max_size=size))
    empty = not steps and draw(st.booleans())
    starts: list[int] = [] if empty else [HOP * int(k) for k in np.cumsum([0, *steps])]
    scores: list[float] = []  # runs of equal scores: sustained sounds, drops, bursts
    while len(scores) < len(starts):
        scores += [draw(probabilities)] * draw(st.integers(1, 4))
    del scores[len(starts) :]
    window_frames = None
    if draw(st.booleans()):
        window_frames = [
            np.array(draw(st.lists(probabilities, min_size=N_FRAMES, max_size=N_FRAMES)))
            for _ in starts
        ]
    return event_rule, starts, scores, window_frames


@settings(max_examples=400, deadline=None)
@given(cases())
def test_streaming_equals_offline_equals_the_reference(
    case: tuple[EventRule, list[int], list[float], list[np.ndarray] | None],
) -> None:
    event_rule, starts, scores, window_frames = case
    frame_geometry = FRAMES if window_frames is not None else {}
    expected = reference(starts, scores, event_rule, window_frames)

    tracker = EventTracker(event_rule, **GEOMETRY, **frame_geometry, sensor_id="s", stream_id="t")
    merge_gap = round(event_rule.merge_gap_s * SR)
    min_duration = round(event_rule.min_duration_s * SR)
    started: dict[str, EventUpdate] = {}
    ended: list[Detected] = []
    for index, start in enumerate(starts):
        frames_in = None if window_frames is None else window_frames[index]
        for update in tracker.push(start, scores[index], frames_in):
            event = update.event
            assert update.event_id == event_id("s", "t", "glass_break", event.onset_sample)
            if update.kind == "started":
                assert update.event_id not in started
                assert event.offset_sample == event.onset_sample
                started[update.event_id] = update
                continue
            # Ended: started before, and ended as soon as it could be known to be over.
            assert started[update.event_id].event.onset_sample == event.onset_sample
            ref = expected[len(ended)]
            assert index > ref.last_window
            gap = index > 0 and start - starts[index - 1] > HOP
            seg_end = start + (WINDOW - HOP) // 2 + HOP
            # (A new event starting here has its onset before seg_end, so it is covered too.)
            assert gap or seg_end - event.offset_sample >= merge_gap
            # It was not yet final at the window before (unless that was the last active one).
            # (With a look-back, a run in the window before could still have merged.)
            if index - 1 > ref.last_window and not event_rule.onset_lookback_windows:
                previous_end = starts[index - 1] + (WINDOW - HOP) // 2 + HOP
                assert previous_end - event.offset_sample < merge_gap
            ended.append(event)
    for update in tracker.flush():
        assert update.kind == "ended"
        assert update.event_id in started
        ended.append(update.event)

    assert len(started) == len(ended)
    assert all(e.offset_sample - e.onset_sample >= min_duration for e in ended)
    assert [(e.onset_sample, e.offset_sample) for e in ended] == [
        (r.onset, r.offset) for r in expected
    ]
    assert [e.peak_score for e in ended] == [r.peak for r in expected]
    offline_events = detect_events(
        np.array(starts, dtype=np.int64),
        scores,
        event_rule,
        frame_scores=window_frames,
        **GEOMETRY,
        **frame_geometry,
    )
    assert offline_events == ended


@settings(max_examples=200, deadline=None)
@given(cases(), st.floats(0.0, 1.0))
def test_a_tracker_restored_from_a_snapshot_continues_exactly(
    case: tuple[EventRule, list[int], list[float], list[np.ndarray] | None], split: float
) -> None:
    event_rule, starts, scores, window_frames = case
    geometry = {**GEOMETRY, **(FRAMES if window_frames is not None else {})}
    cut = round(split * len(starts))

    def frames(index: int) -> np.ndarray | None:
        return None if window_frames is None else window_frames[index]

    whole = EventTracker(event_rule, **geometry, sensor_id="s", stream_id="t")
    expected = [u for i, x in enumerate(starts) for u in whole.push(x, scores[i], frames(i))]
    expected += whole.flush()

    first = EventTracker(event_rule, **geometry, sensor_id="s", stream_id="t")
    got = [u for i in range(cut) for u in first.push(starts[i], scores[i], frames(i))]
    # Through JSON, as a changelog would store it: the snapshot, and the packed form.
    states = [
        json.loads(json.dumps(first.snapshot())),
        unpacked(json.loads(json.dumps(first.packed()))),
    ]
    for state in states:
        second = EventTracker(event_rule, **geometry, sensor_id="s", stream_id="t")
        second.restore(state)
        rest = [
            u for i in range(cut, len(starts)) for u in second.push(starts[i], scores[i], frames(i))
        ]
        assert got + rest + second.flush() == expected


def test_a_snapshot_under_other_smoothing_restarts_the_smoothing() -> None:
    tracker = EventTracker(rule(smoothing=3), **GEOMETRY)
    tracker.push(0, 1.0)
    other = EventTracker(rule(smoothing=2), **GEOMETRY)
    other.restore(tracker.snapshot())
    assert other.snapshot()["recent"] == [0.0, 0.0]
    assert other.snapshot()["last_start"] == 0


@pytest.mark.parametrize(
    "state",
    [
        {},
        {"version": 2},
        {"version": 1, "recent": "x"},
        {"version": 1, "recent": [], "ring_pos": None},
    ],
)
def test_a_broken_snapshot_is_refused_and_changes_nothing(state: dict[str, Any]) -> None:
    tracker = EventTracker(rule(), **GEOMETRY)
    tracker.push(0, 1.0)
    before = tracker.snapshot()
    with pytest.raises(BadMessageError, match="snapshot"):
        tracker.restore(state)
    assert tracker.snapshot() == before


@pytest.mark.parametrize(
    "change",
    [
        {"peak": float("nan")},
        {"peak": 1.5},
        {"recent": [float("inf")]},
        {"recent": [-0.1]},
        {"offset": float("inf")},
        {"onset": [1]},
    ],
)
def test_a_snapshot_with_impossible_values_is_refused(change: dict[str, Any]) -> None:
    tracker = EventTracker(rule(), **GEOMETRY)
    tracker.push(0, 1.0)
    before = tracker.snapshot()
    with pytest.raises(BadMessageError, match="snapshot"):
        tracker.restore({**before, **change})
    assert tracker.snapshot() == before


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0.0, 1.0), st.integers(0, N_FRAMES - 1), st.booleans()),
        min_size=1,
        max_size=30,
    )
)
def test_push_checked_gives_what_push_gives_for_checked_values(
    steps: list[tuple[float, int, bool]],
) -> None:
    """The alerter checks a message once and calls push_checked: same updates as push."""
    checking = EventTracker(rule(0.5, 0.3, merge_gap_s=0.6), **GEOMETRY, **FRAMES)
    trusting = EventTracker(rule(0.5, 0.3, merge_gap_s=0.6), **GEOMETRY, **FRAMES)
    start = 0
    for score, hot, gap in steps:
        start += 2 * HOP if gap else HOP
        window = frames(hot, value=score)
        assert trusting.push_checked(start, score, window) == checking.push(start, score, window)
    assert trusting.flush() == checking.flush()


def test_push_checked_refuses_a_window_off_the_hop_grid_and_changes_nothing() -> None:
    tracker = EventTracker(rule(0.5), **GEOMETRY, **FRAMES)
    tracker.push_checked(0, 0.9, frames(4))
    before = tracker.snapshot()
    with pytest.raises(BadMessageError, match="less than the hop") as refused:
        tracker.push_checked(HOP // 2, 0.9, frames(4))
    assert refused.value.reason == "window_off_grid"
    assert tracker.snapshot() == before


@pytest.mark.parametrize("windows", [0, 1])
def test_the_window_that_ends_an_event_ends_it_as_soon_as_without_look_back(windows: int) -> None:
    # Window 2 ends the event (0.3 < 0.5) with frames hot to its end; it is never looked back
    # at, so it cannot merge a later run: the event is over at window 2 either way.
    tracker = EventTracker(lookback(windows, merge_gap_s=0.6), **GEOMETRY, **FRAMES)
    assert [u.kind for u in tracker.push(0, 0.9)] == ["started"]
    assert tracker.push(HOP, 0.9, frames(3)) == []
    (ended,) = tracker.push(2 * HOP, 0.3, frames(3, 4, 5))
    assert (ended.event.onset_sample, ended.event.offset_sample) == (0, 1000)


def test_look_back_takes_frame_scores_shorter_than_the_window() -> None:
    # Fewer frames than the geometry says (a model with a coarser frame output, or a bad
    # record): the look-back uses the frames there are and never reads past them.
    tracker = EventTracker(lookback(1), **GEOMETRY, **FRAMES)
    assert tracker.push(0, 0.1, np.full(3, 0.9)) == []
    assert tracker.push(HOP, 0.1, np.full(5, 0.9)) == []
    (started,) = tracker.push(2 * HOP, 0.9, np.full(N_FRAMES, 0.9))
    # Window 1's frames inside its segment (3 and 4 of the 5 it has) are all hot: its segment.
    assert started.event.onset_sample == HOP + 250


def test_the_card_and_override_schemas_have_the_rule_fields_and_defaults() -> None:
    # EventRule and RuleSpec declare the same fields twice (a dataclass for the hot path, a
    # pydantic model for cards and rules files): a field added to one must reach the other.
    from dataclasses import MISSING, fields  # noqa: PLC0415

    from soundsentry.events.rules import RULE_FIELDS, RuleOverrides, RuleSpec  # noqa: PLC0415

    rule_fields = [f for f in fields(EventRule) if f.name != "label"]
    assert [f.name for f in rule_fields] == list(RULE_FIELDS) == list(RuleOverrides.model_fields)
    for f in rule_fields:
        spec_default = RuleSpec.model_fields[f.name].default
        assert (f.default is MISSING) == RuleSpec.model_fields[f.name].is_required(), f.name
        if f.default is not MISSING:
            assert spec_default == f.default, f.name
