"""The stages in one process, composed once: featurizer -> models -> alert engine.

:class:`Pipeline` is what ``soundsentry detect`` (:func:`~soundsentry.pipeline.detect.detect_file`)
and ``soundsentry serve`` (:class:`~soundsentry.pipeline.embedded.EmbeddedPipeline`) run: audio
chunks of any sensors go in, the :class:`~soundsentry.features.featurizer.Featurizer` makes the
windows of the models' profiles, the :class:`~soundsentry.models.model_set.ModelSet` scores them
and the :class:`~soundsentry.alerting.engine.AlertEngine` turns the scores into events: the same
classes, in the same order and on the same messages, as the featurizer, classifier and alerter
services with Kafka between them. State lives in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from soundsentry.alerting.engine import AlertEngine
from soundsentry.contracts import AudioChunk, Event
from soundsentry.exceptions import BadMessageError
from soundsentry.features.featurizer import Featurizer
from soundsentry.models.model_set import ModelSet, WindowScore, score_to_proto

__all__ = ["Pipeline", "PipelineCounts"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class PipelineCounts:
    """What the pipeline has done so far."""

    chunks: int = 0
    rejected: int = 0
    windows: int = 0
    scores: int = 0
    events: int = 0
    suppressed: int = 0
    sequence_events: dict[str, int] = field(default_factory=dict)


def _nothing_stored(sensor_id: str) -> None:
    return None


class Pipeline:
    """Featurizer, models and alert engine for any number of sensors: push chunks, get events.

    Parameters
    ----------
    models : ModelSet
        The classifier's models; the featurizer emits exactly their profiles.
    engine : AlertEngine or None
        Built from the same models' cards (with the alert rules); default: the cards' own rules.
    """

    def __init__(self, models: ModelSet, engine: AlertEngine | None = None) -> None:
        self.models = models
        self.engine = (
            engine if engine is not None else AlertEngine({m.name: m.card for m in models.models})
        )
        self.featurizer = Featurizer(models.profiles())
        self.counts = PipelineCounts()
        self._labels = {m.name: list(m.card.labels) for m in models.models}

    def push(
        self,
        chunks: Sequence[AudioChunk],
        *,
        on_score: Callable[[WindowScore], None] | None = None,
    ) -> list[Event]:
        """Featurize ``chunks`` in one batch, score the windows and track the scores; the
        events (started and ended) they cause. ``on_score`` sees each model's scores of each
        window before they are tracked."""
        counts = self.counts
        counts.chunks += len(chunks)
        result = self.featurizer.process(chunks)
        counts.rejected += len(result.rejected)
        for reason, count in result.events.items():
            counts.sequence_events[reason] = counts.sequence_events.get(reason, 0) + count
        counts.windows += len(result.windows)
        events: list[Event] = []
        for scored in self.models.score(result.windows):
            if on_score is not None:
                on_score(scored)
            message = score_to_proto(scored, self._labels[scored.model])
            counts.scores += 1
            try:
                # Nothing is stored: the engine keeps every sensor's trackers in memory.
                outcome = self.engine.process(message, _nothing_stored)
            except BadMessageError:
                logger.exception("scores of window %s refused", message.window_id)
                continue
            events += outcome.events
        counts.events += len(events)
        return events

    def end(self, sensor_id: str) -> list[Event]:
        """End a sensor's stream (a file read to its end): its open events end now."""
        events = self.engine.end(sensor_id)
        self.counts.events += len(events)
        return events
