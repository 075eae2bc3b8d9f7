"""Detection over audio files in one process: the embedded pipeline, no Kafka.

The file is cut into AudioChunks as a microphone would send them and pushed through the
:class:`~soundsentry.pipeline.stages.Pipeline` that ``soundsentry serve`` runs too (featurizer,
models, alert engine: the same classes as the services); at the end of the file the events
still open end. Files are read block by block, so memory stays constant however long the file is.

Event rules come from each model card (:func:`~soundsentry.models.trackers.event_rule_for`: its
``event_rules`` for a label when it has them, else the threshold with hysteresis). Windows quieter
than the card's ``silence_gate_dbfs`` are not scored (they count as 0).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from soundsentry.audio.pcm import file_blocks, s16_chunks
from soundsentry.contracts import Event, EventKind
from soundsentry.evaluation.operating import ScoreTrack
from soundsentry.exceptions import ConfigurationError
from soundsentry.models.model_set import ModelSet, WindowScore
from soundsentry.models.trackers import event_rule_for
from soundsentry.pipeline.stages import Pipeline

__all__ = [
    "DetectedEvent",
    "WindowTrace",
    "detect_file",
    "plot_detections",
    "score_tracks",
]

_BLOCK_S = 5.0
_SENSOR = "file"


@dataclass(frozen=True, slots=True)
class DetectedEvent:
    file: str
    label: str
    model: str
    onset_s: float
    offset_s: float
    peak_score: float


@dataclass(slots=True)
class WindowTrace:
    """What --plot draws: one point per scored window (time of its centre, score per label),
    and where each window starts (samples), for :func:`score_tracks`."""

    model: str
    label: str
    times_s: list[float]
    scores: list[float]
    start_samples: list[int] = field(default_factory=list)


def score_tracks(file_id: str, traces: Iterable[WindowTrace], models: ModelSet) -> list[ScoreTrack]:
    """``detect_file``'s traces of one recording as operating-point tracks (one per label)."""
    cards = {m.name: m.card for m in models.models}
    tracks = []
    for trace in traces:
        card = cards[trace.model]
        profile = card.profile
        tracks.append(
            ScoreTrack(
                file_id=file_id,
                rule=event_rule_for(card, trace.label),
                start_samples=np.asarray(trace.start_samples, dtype=np.int64),
                scores=np.asarray(trace.scores, dtype=np.float64),
                sample_rate_hz=profile.mel.sample_rate_hz,
                window_samples=profile.window_samples,
                hop_samples=profile.hop_frames * profile.mel.hop_length,
            )
        )
    return tracks


def detect_file(
    path: str | Path,
    models: ModelSet,
    *,
    progress: Callable[[float], None] | None = None,
    traces: list[WindowTrace] | None = None,
) -> list[DetectedEvent]:
    """Detect events in one audio file; ``progress`` gets the share done (0..1) per block.

    With ``traces``, each (model, label)'s window scores are appended to it (for plots).

    Raises
    ------
    ConfigurationError
        when the file cannot be read.
    """
    source = Path(path)
    import soundfile  # noqa: PLC0415

    try:
        total_frames = max(1, soundfile.info(str(source)).frames)
    except (OSError, RuntimeError, soundfile.LibsndfileError) as exc:
        raise ConfigurationError(f"cannot read audio file {source}: {exc}") from exc
    pipeline = Pipeline(models)
    trace_of: dict[tuple[str, str], WindowTrace] = {}
    if traces is not None:
        for model in models.models:
            for label in model.card.labels:
                if label in models.reported[model.name]:  # not taken over by another model
                    trace_of[model.name, label] = WindowTrace(model.name, label, [], [])
                    traces.append(trace_of[model.name, label])
    labels = {m.name: m.card.labels for m in models.models}
    events: list[DetectedEvent] = []

    def trace(result: WindowScore) -> None:
        window = result.window
        centre_s = (window.start_sample + window.num_samples / 2) / window.sample_rate_hz
        for index, label in enumerate(labels[result.model]):
            found = trace_of.get((result.model, label))
            if found is not None:
                found.times_s.append(centre_s)
                found.scores.append(float(result.scores[index]))  # 0 below the silence gate
                found.start_samples.append(window.start_sample)

    def record(updates: Iterable[Event]) -> None:
        for event in updates:
            if event.kind == EventKind.EVENT_KIND_ENDED:
                rate = event.sample_rate_hz
                events.append(
                    DetectedEvent(
                        file=str(source),
                        label=event.label,
                        model=event.model,
                        onset_s=event.onset_sample / rate,
                        offset_s=event.offset_sample / rate,
                        peak_score=event.peak_score,
                    )
                )

    rate, blocks = file_blocks(source, block_s=_BLOCK_S)
    chunks = s16_chunks(blocks, sensor_id=_SENSOR, stream_id=uuid.uuid4().hex, sample_rate_hz=rate)
    done = 0
    for chunk in chunks:
        record(pipeline.push([chunk], on_score=trace if trace_of else None))
        done += len(chunk.pcm) // (2 * max(chunk.channels, 1))
        if progress is not None:
            progress(min(1.0, done / total_frames))
    record(pipeline.end(_SENSOR))
    events.sort(key=lambda e: (e.onset_s, e.label, e.model))
    return events


def plot_detections(
    path: str | Path,
    *,
    models: ModelSet,
    traces: list[WindowTrace],
    events: list[DetectedEvent],
    out: str | Path,
) -> Path:
    """Draw the file's log-mel spectrogram, the window scores per label and the event spans.

    Reads the whole file (a plot is for looking at a recording, not for streaming).

    Raises
    ------
    ConfigurationError
        when matplotlib is missing (``pip install 'soundsentry[plot]'``).
    """
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError as exc:
        raise ConfigurationError(
            "--plot needs matplotlib: pip install 'soundsentry[plot]'"
        ) from exc
    from soundsentry.audio.mel import MelFrontEnd  # noqa: PLC0415
    from soundsentry.audio.pcm import load_audio  # noqa: PLC0415

    profile = models.profiles()[0]
    samples, rate = load_audio(path)
    if rate != profile.mel.sample_rate_hz:
        import soxr  # noqa: PLC0415

        samples = soxr.resample(samples, rate, profile.mel.sample_rate_hz)
    log_mel = MelFrontEnd(profile.mel).log_mel(samples)
    duration = samples.size / profile.mel.sample_rate_hz
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(12, 6), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    top.imshow(
        log_mel,
        origin="lower",
        aspect="auto",
        extent=(0.0, duration, 0, log_mel.shape[0]),
        vmin=float(log_mel.max()) - 80.0,
        cmap="magma",
    )
    # Ticks at mel bands, labelled with their centre frequencies: what a reader can relate to.
    import librosa  # noqa: PLC0415

    mel = profile.mel
    centres = librosa.mel_frequencies(n_mels=mel.n_mels + 2, fmin=mel.fmin_hz, fmax=mel.fmax_hz)
    ticks = list(range(0, log_mel.shape[0], max(1, log_mel.shape[0] // 6)))
    top.set_yticks([t + 0.5 for t in ticks])
    top.set_yticklabels([f"{centres[t + 1] / 1000:.1f}" for t in ticks])
    top.set_ylabel("frequency (kHz)")
    top.set_title(Path(path).name)
    for trace in traces:
        if trace.scores and max(trace.scores) > 0.05:
            bottom.plot(trace.times_s, trace.scores, label=f"{trace.label} ({trace.model})")
    for event in events:
        for axis in (top, bottom):
            axis.axvspan(event.onset_s, event.offset_s, color="tab:cyan", alpha=0.25)
        top.text(event.onset_s, log_mel.shape[0] * 0.92, event.label, color="white", fontsize=8)
    bottom.set_ylim(0.0, 1.0)
    bottom.set_ylabel("score")
    bottom.set_xlabel("time (s)")
    if bottom.lines:
        bottom.legend(loc="upper right", fontsize=7)
    figure.tight_layout()
    target = Path(out)
    figure.savefig(target, dpi=100)
    plt.close(figure)
    return target
