"""Every stage in one process, without Kafka: what ``soundsentry serve`` runs behind gRPC ingest.

:class:`EmbeddedPipeline` takes the place of the Kafka producer behind the ingest servicer: each
accepted chunk is queued, and a worker takes whatever has queued up (chunks of all sensors, up
to ``max_batch``) and pushes it through the :class:`~soundsentry.pipeline.stages.Pipeline` in one
batch (featurizer, models, alert engine), exactly as the featurizer, classifier and alerter
services do with their batches. A chunk is acknowledged to the sensor once its batch has gone
through every stage. The events go to the notifier and to ``on_event``.

The numeric work runs in a worker thread, so the event loop keeps serving gRPC meanwhile.
State lives in memory: a restarted ``serve`` starts every sensor afresh.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from soundsentry.alerting.engine import AlertEngine, NotificationPolicy
from soundsentry.contracts import AudioChunk, Event, decode
from soundsentry.models.model_set import ModelSet
from soundsentry.notify.notifier import Notifier
from soundsentry.pipeline.stages import Pipeline, PipelineCounts

__all__ = ["EmbeddedPipeline"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Queued:
    chunk: bytes
    done: asyncio.Future[None]


class EmbeddedPipeline:
    """Featurizer, models and alert engine behind one queue (see the module docstring).

    Parameters
    ----------
    models : ModelSet
        The classifier's models; the featurizer emits exactly their profiles.
    engine : AlertEngine
        Built from the same models' cards.
    notifier : Notifier or None
        Where events are notified (after the ``policy``'s cooldowns and quiet hours).
    on_event : callable or None
        Called with every event, e.g. to print it.
    max_batch : int
        Most chunks featurized together.
    """

    def __init__(
        self,
        models: ModelSet,
        engine: AlertEngine,
        *,
        notifier: Notifier | None = None,
        policy: NotificationPolicy | None = None,
        on_event: Callable[[Event], None] | None = None,
        max_batch: int = 256,
    ) -> None:
        self.pipeline = Pipeline(models, engine)
        self.notifier = notifier
        self.policy = policy
        self.on_event = on_event
        self.max_batch = max_batch
        self._queue: asyncio.Queue[_Queued] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    @property
    def counts(self) -> PipelineCounts:
        """What the pipeline has done so far."""
        return self.pipeline.counts

    async def send(self, topic: str, value: bytes, *, key: bytes) -> asyncio.Future[None]:
        """Queue one encoded AudioChunk (the Kafka producer's ``send``); the returned future
        completes when the chunk has gone through every stage."""
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._work(), name="pipeline")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Queued(value, done))
        return done

    async def stop(self) -> None:
        """Finish what is queued, then stop the worker and flush the notifier."""
        await self._queue.join()
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        if self.notifier is not None:
            await self.notifier.close()

    async def _work(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                events = await asyncio.to_thread(self._process, [q.chunk for q in batch])
                for event in events:
                    self._emit(event)
                for queued in batch:
                    queued.done.set_result(None)
            except Exception as exc:  # a bug: fail these chunks, keep serving the others
                logger.exception("embedded pipeline batch failed")
                for queued in batch:
                    if not queued.done.done():
                        queued.done.set_exception(exc)
            finally:
                for _ in batch:
                    self._queue.task_done()

    def _process(self, raw: Sequence[bytes]) -> list[Event]:
        return self.pipeline.push([decode(AudioChunk, value) for value in raw])

    def _emit(self, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(event)
        if self.notifier is None:
            return
        if self.policy is not None and self.policy.decide(event) is not None:
            self.counts.suppressed += 1
            return
        self.notifier.submit(event)
