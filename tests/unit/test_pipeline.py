"""The one composition of the stages (featurizer -> models -> alert engine) that `soundsentry
detect` and `soundsentry serve` both run."""

from __future__ import annotations

from pathlib import Path

from soundsentry.audio.pcm import file_blocks, s16_chunks
from soundsentry.contracts import Event, EventKind
from soundsentry.models.model_set import ModelSet
from soundsentry.pipeline.detect import detect_file
from soundsentry.pipeline.stages import Pipeline

REPO = Path(__file__).resolve().parents[2]
KITCHEN = REPO / "examples" / "audio" / "kitchen_alarms.flac"


def ended(events: list[Event]) -> list[tuple[str, str, float, float]]:
    return sorted(
        (
            e.label,
            e.model,
            e.onset_sample / e.sample_rate_hz,
            e.offset_sample / e.sample_rate_hz,
        )
        for e in events
        if e.kind == EventKind.EVENT_KIND_ENDED
    )


def test_detect_finds_the_events_a_pipeline_fed_in_any_batches_finds() -> None:
    models = ModelSet.from_dir(REPO / "models")
    expected = detect_file(KITCHEN, models)
    assert expected  # the example has alarms in it
    pipeline = Pipeline(models)
    rate, blocks = file_blocks(KITCHEN, block_s=0.7)
    chunks = list(s16_chunks(blocks, sensor_id="kitchen", stream_id="s", sample_rate_hz=rate))
    events: list[Event] = []
    for start in range(0, len(chunks), 3):
        events += pipeline.push(chunks[start : start + 3])
    events += pipeline.end("kitchen")  # the end of the file ends what is open
    assert ended(events) == sorted((d.label, d.model, d.onset_s, d.offset_s) for d in expected)
    assert pipeline.counts.chunks == len(chunks)
    assert pipeline.counts.events == len(events)
    assert pipeline.end("kitchen") == []  # ended once
