"""Event trackers for a model's labels: the rule each label uses, and a tracker with the geometry
of the model's windows.

The alerter, ``soundsentry detect`` and the embedded server build their trackers here, so that a
label's events follow the same rule everywhere. A card's ``event_rules`` entry for a label wins
(``soundsentry calibrate`` tunes them on validation data); otherwise a label enters an event at
its threshold and leaves it below :data:`OFF_RATIO` x the threshold (hysteresis), and short drops
of up to one window hop are merged.
"""

from __future__ import annotations

from soundsentry.events.tracker import EventRule, EventTracker
from soundsentry.models.model_set import ModelCard

__all__ = ["OFF_RATIO", "event_rule_for", "new_event_tracker"]

# Off threshold as a share of the on threshold: hysteresis against flicker at the threshold.
OFF_RATIO = 0.75


def event_rule_for(card: ModelCard, label: str) -> EventRule:
    """The rule detection uses for one label of one model (see the module docstring)."""
    tuned = card.event_rule(label)
    if tuned is not None:
        return tuned
    on = card.threshold(label)
    profile = card.profile
    hop_s = profile.hop_frames * profile.mel.hop_length / profile.mel.sample_rate_hz
    return EventRule(
        label=label,
        on_threshold=on,
        off_threshold=on * OFF_RATIO,
        smoothing_windows=1,
        min_duration_s=0.0,
        merge_gap_s=hop_s,
    )


def new_event_tracker(
    card: ModelCard, rule: EventRule, *, sensor_id: str = "", stream_id: str = ""
) -> EventTracker:
    """An event tracker for one label of ``card``'s model, with the geometry of its windows
    (frame scores, when the model gives them, are one per STFT frame)."""
    profile = card.profile
    return EventTracker(
        rule,
        sample_rate_hz=profile.mel.sample_rate_hz,
        window_samples=profile.window_samples,
        hop_samples=profile.hop_frames * profile.mel.hop_length,
        frame_hop_samples=profile.mel.hop_length,
        frame_samples=profile.mel.n_fft,
        sensor_id=sensor_id,
        stream_id=stream_id,
    )
