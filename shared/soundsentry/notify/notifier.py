"""Telling people and systems about events: destinations, and a notifier that fans out to them.

Destinations:

* :class:`WebhookDestination`: an HTTP POST of the event as JSON (:func:`event_payload`), or in
  Slack's incoming-webhook format (:func:`slack_payload`), signed with HMAC-SHA256 over
  ``"<timestamp>.<body>"`` (headers ``X-SoundSentry-Timestamp`` and
  ``X-SoundSentry-Signature: sha256=<hex>``) so the receiver can check origin and freshness;
* :class:`SnsDestination`: an Amazon SNS ``Publish`` of the same JSON;
* :class:`MqttDestination`: Home Assistant style MQTT (discovery config, ``ON``/``OFF`` state and
  the event's JSON as attributes, retained).

Every request names the event (``X-SoundSentry-Event-Id`` and ``X-SoundSentry-Delivery-Id`` =
``<event id>:<kind>``, SNS message attributes alike), so receivers drop the duplicates that
at-least-once delivery allows.

:class:`Notifier` gives every destination a queue and a worker of its own: a failing or slow
destination delays only itself. Each delivery is retried with jittered exponential backoff
while the error is retryable (network, timeouts, 429, 5xx), within a per-destination rate
limit; after its retries, or at once for a refused request or a full queue, the delivery is
dead-lettered through a callback. A destination remembers the deliveries it made (bounded), so
a replayed event is not sent twice by one process.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from soundsentry.aws import aws_client
from soundsentry.backoff import backoff_delays
from soundsentry.contracts import Event, EventKind, kind_name
from soundsentry.exceptions import ConfigurationError, SoundSentryError
from soundsentry.ratelimit import TokenBucket

__all__ = [
    "DeliveryError",
    "Destination",
    "MqttDestination",
    "NotificationMetrics",
    "Notifier",
    "ParkEvent",
    "SnsDestination",
    "WebhookDestination",
    "delivery_id",
    "destinations_from_config",
    "event_payload",
    "sign",
    "slack_payload",
]

logger = logging.getLogger(__name__)

# A webhook answers in tens of ms; a retried or timing-out one in seconds.
_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class DeliveryError(SoundSentryError):
    """A delivery failed; ``retryable`` when trying again later may succeed."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def delivery_id(event: Event) -> str:
    """What receivers deduplicate on: the event id and the kind (started and ended differ)."""
    return f"{event.event_id}:{kind_name(event.kind)}"


def _iso(timestamp: Any) -> str | None:
    if not timestamp.seconds and not timestamp.nanos:
        return None
    text: str = timestamp.ToJsonString()
    return text


def event_payload(event: Event) -> dict[str, Any]:
    """The JSON body of a notification (times as RFC 3339 UTC, or null when unknown)."""
    rate = event.sample_rate_hz or 1
    ended = event.kind == EventKind.EVENT_KIND_ENDED
    return {
        "event_id": event.event_id,
        "delivery_id": delivery_id(event),
        "kind": kind_name(event.kind),
        "sensor_id": event.sensor_id,
        "stream_id": event.stream_id,
        "label": event.label,
        "onset": _iso(event.onset_time),
        "offset": _iso(event.offset_time) if ended else None,
        "onset_s": event.onset_sample / rate,
        "offset_s": event.offset_sample / rate if ended else None,
        "peak_score": round(float(event.peak_score), 6),
        "model": event.model,
        "model_version": event.model_version,
    }


def slack_payload(event: Event) -> dict[str, Any]:
    """The same event as a Slack (or Mattermost, Rocket.Chat) incoming-webhook message."""
    body = event_payload(event)
    label = event.label.replace("_", " ")
    when = body["onset"] or f"{body['onset_s']:.1f} s into the stream"
    if body["kind"] == "started":
        text = f":rotating_light: *{label}* at `{event.sensor_id}` since {when}"
    else:
        duration = (body["offset_s"] or 0.0) - body["onset_s"]
        text = f":white_check_mark: *{label}* at `{event.sensor_id}` ended after {duration:.1f} s"
    text += f" (score {body['peak_score']:.2f}, event `{event.event_id}`)"
    return {"text": text}


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The signature header value: ``sha256=`` + HMAC-SHA256 of ``timestamp.body``."""
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class Destination(Protocol):
    """Somewhere notifications go."""

    @property
    def name(self) -> str: ...

    async def send(self, event: Event) -> None:
        """Deliver one event; raises DeliveryError."""
        ...

    async def close(self) -> None: ...


class WebhookDestination:
    """POST each event to ``url`` as JSON (``style="json"``) or a Slack message (``"slack"``).

    2xx is success; 408, 429, 5xx, timeouts and connection errors are retryable; any other
    status means the request is refused and is not retried.
    """

    def __init__(
        self,
        name: str,
        url: str,
        *,
        secret: str | None = None,
        style: Literal["json", "slack"] = "json",
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"destination {name}: {url!r} is not an http(s) URL")
        self.name = name
        self.url = url
        self.style = style
        self._secret = secret.encode() if secret else None
        self._timeout_s = timeout_s
        self._clock = clock
        self._session: Any = None

    def request(self, event: Event) -> tuple[bytes, dict[str, str]]:
        """The body and headers sent for ``event``."""
        payload = slack_payload(event) if self.style == "slack" else event_payload(event)
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "soundsentry",
            "X-SoundSentry-Event-Id": event.event_id,
            "X-SoundSentry-Delivery-Id": delivery_id(event),
        }
        if self._secret is not None:
            timestamp = str(int(self._clock()))
            headers["X-SoundSentry-Timestamp"] = timestamp
            headers["X-SoundSentry-Signature"] = sign(self._secret, timestamp, body)
        return body, headers

    async def send(self, event: Event) -> None:
        import aiohttp  # noqa: PLC0415 - a Faust dependency; only notifiers use it

        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout_s)
            )
        body, headers = self.request(event)
        try:
            async with self._session.post(self.url, data=body, headers=headers) as response:
                status = response.status
                await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryError(
                f"{self.name}: {type(exc).__name__}: {exc}", retryable=True
            ) from exc
        if 200 <= status < 300:
            return
        retryable = status in (408, 429) or status >= 500
        raise DeliveryError(f"{self.name}: HTTP {status}", retryable=retryable)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class SnsDestination:
    """Publish each event's JSON to an Amazon SNS topic (boto3's credential chain).

    A FIFO topic (``.fifo``) gets the delivery id as its deduplication id and the sensor as its
    message group.
    """

    def __init__(
        self,
        name: str,
        topic_arn: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        timeout_s: float = 5.0,
        client: Any = None,
    ) -> None:
        if not topic_arn.startswith("arn:") or ":sns:" not in topic_arn:
            raise ConfigurationError(f"destination {name}: {topic_arn!r} is not an SNS topic ARN")
        self.name = name
        self.topic_arn = topic_arn
        if client is None:
            client = aws_client(
                "sns",
                region=region or topic_arn.split(":")[3],
                endpoint_url=endpoint_url,
                timeout_s=timeout_s,
            )
        self._client = client

    def _publish(self, event: Event) -> None:
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        payload = event_payload(event)
        request: dict[str, Any] = {
            "TopicArn": self.topic_arn,
            "Message": json.dumps(payload, sort_keys=True),
            "Subject": f"{event.label} {payload['kind']} at {event.sensor_id}"[:100],
            "MessageAttributes": {
                name: {"DataType": "String", "StringValue": value}
                for name, value in (
                    ("event_id", event.event_id),
                    ("delivery_id", delivery_id(event)),
                    ("label", event.label),
                    ("kind", payload["kind"]),
                    ("sensor_id", event.sensor_id),
                )
            },
        }
        if self.topic_arn.endswith(".fifo"):
            request["MessageDeduplicationId"] = hashlib.sha256(
                delivery_id(event).encode()
            ).hexdigest()
            request["MessageGroupId"] = event.sensor_id[:128] or "soundsentry"
        try:
            self._client.publish(**request)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            retryable = status >= 500 or status == 429 or "Throttl" in str(error.get("Code"))
            raise DeliveryError(
                f"{self.name}: SNS {error.get('Code', status)}: {error.get('Message', exc)}",
                retryable=retryable,
            ) from exc
        except BotoCoreError as exc:
            raise DeliveryError(f"{self.name}: {exc}", retryable=True) from exc

    async def send(self, event: Event) -> None:
        await asyncio.to_thread(self._publish, event)

    async def close(self) -> None:
        return None


_DEVICE_CLASSES = {"smoke_alarm": "smoke", "co_alarm": "carbon_monoxide"}


def _object_id(text: str) -> str:
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in text)


class MqttDestination:
    """Home Assistant style MQTT: each (sensor, label) is a ``binary_sensor``.

    On its first event, a retained discovery config goes to
    ``<discovery_prefix>/binary_sensor/soundsentry_<sensor>/<label>/config``; then each event
    sets the retained state ``<topic_prefix>/<sensor>/<label>/state`` to ``ON`` (started) or
    ``OFF`` (ended) and its attributes topic to the event's JSON, all with QoS 1. Smoke and CO
    alarms get Home Assistant's ``smoke`` and ``carbon_monoxide`` device classes, other labels
    ``sound``. One connection is kept open and made again after a failure.
    """

    def __init__(
        self,
        name: str,
        host: str,
        port: int = 1883,
        *,
        username: str | None = None,
        password: str | None = None,
        topic_prefix: str = "soundsentry",
        discovery_prefix: str = "homeassistant",
        timeout_s: float = 5.0,
    ) -> None:
        self.name = name
        self.host, self.port = host, port
        self.username, self.password = username, password
        self.topic_prefix = topic_prefix.rstrip("/")
        self.discovery_prefix = discovery_prefix.rstrip("/")
        self.timeout_s = timeout_s
        self._client: Any = None
        self._announced: set[tuple[str, str]] = set()

    def topics(self, sensor_id: str, label: str) -> tuple[str, str, str]:
        """(config, state, attributes) topics of one sensor and label."""
        sensor, label_id = _object_id(sensor_id), _object_id(label)
        base = f"{self.topic_prefix}/{sensor}/{label_id}"
        config = f"{self.discovery_prefix}/binary_sensor/soundsentry_{sensor}/{label_id}/config"
        return config, f"{base}/state", f"{base}/attributes"

    def discovery(self, sensor_id: str, label: str) -> dict[str, Any]:
        """The Home Assistant discovery config of one sensor and label."""
        _, state, attributes = self.topics(sensor_id, label)
        return {
            "name": label.replace("_", " "),
            "unique_id": f"soundsentry_{_object_id(sensor_id)}_{_object_id(label)}",
            "state_topic": state,
            "json_attributes_topic": attributes,
            "payload_on": "ON",
            "payload_off": "OFF",
            "device_class": _DEVICE_CLASSES.get(label, "sound"),
            "device": {
                "identifiers": [f"soundsentry_{_object_id(sensor_id)}"],
                "name": f"SoundSentry {sensor_id}",
                "manufacturer": "SoundSentry",
            },
        }

    async def send(self, event: Event) -> None:
        import aiomqtt  # noqa: PLC0415 - only MQTT destinations need it

        config, state, attributes = self.topics(event.sensor_id, event.label)
        key = (event.sensor_id, event.label)
        try:
            client = await self._connected(aiomqtt)
            if key not in self._announced:
                body = json.dumps(self.discovery(event.sensor_id, event.label), sort_keys=True)
                await client.publish(config, body, qos=1, retain=True, timeout=self.timeout_s)
                self._announced.add(key)
            on = "ON" if event.kind == EventKind.EVENT_KIND_STARTED else "OFF"
            payload = json.dumps(event_payload(event), sort_keys=True)
            await client.publish(attributes, payload, qos=1, retain=True, timeout=self.timeout_s)
            await client.publish(state, on, qos=1, retain=True, timeout=self.timeout_s)
        except aiomqtt.MqttError as exc:
            await self.close()  # connect afresh next time
            raise DeliveryError(f"{self.name}: MQTT: {exc}", retryable=True) from exc

    async def _connected(self, aiomqtt: Any) -> Any:
        if self._client is None:
            client = aiomqtt.Client(
                self.host,
                self.port,
                username=self.username,
                password=self.password,
                timeout=self.timeout_s,
                identifier=f"soundsentry-{self.name}",
            )
            await client.__aenter__()
            self._client = client
        return self._client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.__aexit__(None, None, None)
            except Exception:
                logger.debug("closing the MQTT connection of %s failed", self.name)


# -- the notifier ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NotificationMetrics:
    """Prometheus metrics of notifications (built against the registry passed in)."""

    deliveries: Counter
    attempts: Counter
    seconds: Histogram
    queued: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> NotificationMetrics:
        return cls(
            deliveries=Counter(
                "soundsentry_notifications_total",
                "Notifications by destination and result (delivered, duplicate, dead_lettered, "
                "lost: not even parked).",
                ["destination", "result"],
                registry=registry,
            ),
            attempts=Counter(
                "soundsentry_notification_attempts_total",
                "Requests to destinations (retries included) by destination and outcome "
                "(ok, error).",
                ["destination", "outcome"],
                registry=registry,
            ),
            seconds=Histogram(
                "soundsentry_notification_seconds",
                "Seconds from a notification's queueing to its delivery, by destination.",
                ["destination"],
                buckets=_SECONDS_BUCKETS,
                registry=registry,
            ),
            queued=Gauge(
                "soundsentry_notifications_queued",
                "Notifications waiting for or in delivery, by destination.",
                ["destination"],
                registry=registry,
            ),
        )


# Parks an event a destination could not take: (event, destination name, problem). Not a
# runtime.deadletter.DeadLetter: the notifier only asks for the event to be parked.
ParkEvent = Callable[[Event, str, str], Awaitable[None]]


@dataclass(slots=True)
class _Job:
    event: Event
    done: asyncio.Future[None]
    queued_at: float


class _Lane:
    """One destination's queue, worker, rate limit and memory of deliveries."""

    def __init__(self, destination: Destination, notifier: Notifier) -> None:
        self.destination = destination
        self.notifier = notifier
        self.queue: asyncio.Queue[_Job] = asyncio.Queue(notifier.max_queued)
        # rate_per_minute requests a minute, with bursts of that many.
        self.bucket = TokenBucket(
            notifier.rate_per_minute, notifier.rate_per_minute / 60.0, notifier.clock()
        )
        self.delivered: OrderedDict[str, None] = OrderedDict()
        self.worker: asyncio.Task[None] | None = None

    def offer(self, event: Event) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        job = _Job(event, done, time.monotonic())
        if self.worker is None:
            self.worker = asyncio.get_running_loop().create_task(
                self._work(), name=f"notify {self.destination.name}"
            )
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            self.notifier._spawn(self._refuse(job))
        self._observe()
        return done

    async def _work(self) -> None:
        while True:
            job = await self.queue.get()
            try:
                await self._deliver(job)
            except Exception:
                # Parking itself failed: say so and go on, or the lane would stop for good.
                logger.exception("notification of %s to %s lost", job.event.event_id, self.name)
                self.notifier._count(self.name, "lost")
            finally:
                if not job.done.done():
                    job.done.set_result(None)
                self.queue.task_done()
                self._observe()

    async def _deliver(self, job: _Job) -> None:
        notifier, name = self.notifier, self.destination.name
        key = delivery_id(job.event)
        if key in self.delivered:
            notifier._count(name, "duplicate")
            return
        delays = backoff_delays(
            notifier.retries, notifier.backoff_base_s, notifier.backoff_cap_s, notifier.rng
        )
        for attempt in range(notifier.retries + 1):
            wait = self.bucket.reserve(1.0, notifier.clock())
            if wait:
                await notifier.sleep(wait)
            try:
                await self.destination.send(job.event)
            except DeliveryError as exc:
                notifier._attempt(name, "error")
                logger.warning("notification %s to %s, attempt %d: %s", key, name, attempt + 1, exc)
                if not exc.retryable:
                    await self._dead_letter(job, "refused", str(exc))
                    return
                if attempt == notifier.retries:
                    await self._dead_letter(job, "retries_exhausted", str(exc))
                    return
                await notifier.sleep(delays[attempt])
            except Exception as exc:
                # A bug or an event the destination cannot render (a time beyond year 9999):
                # not retryable, and it must not take the lane's worker down with it.
                notifier._attempt(name, "error")
                logger.exception("notification %s to %s failed", key, name)
                await self._dead_letter(job, "failed", f"{type(exc).__name__}: {exc}")
                return
            else:
                notifier._attempt(name, "ok")
                self.delivered[key] = None
                if len(self.delivered) > notifier.remember:
                    self.delivered.popitem(last=False)
                notifier._count(name, "delivered")
                if notifier.metrics:
                    notifier.metrics.seconds.labels(name).observe(time.monotonic() - job.queued_at)
                return

    async def _refuse(self, job: _Job) -> None:
        try:
            await self._dead_letter(job, "queue_full", "the queue is full")
        finally:
            job.done.set_result(None)

    async def _dead_letter(self, job: _Job, reason: str, problem: str) -> None:
        self.notifier._count(self.destination.name, "dead_lettered")
        await self.notifier.dead_letter(job.event, self.destination.name, f"{reason}: {problem}")

    @property
    def name(self) -> str:
        return self.destination.name

    def _observe(self) -> None:
        if self.notifier.metrics:
            self.notifier.metrics.queued.labels(self.destination.name).set(self.queue.qsize())


class Notifier:
    """Fans each event out to every destination, each in its own lane (see the module docs).

    Parameters
    ----------
    destinations : sequence of Destination
        Names must be unique.
    dead_letter : async callable (event, destination name, problem)
        Called for a notification given up on; should park it durably.
    retries, backoff_base_s, backoff_cap_s
        Retries of a retryable failure, after full-jitter exponential backoff.
    rate_per_minute : float
        Requests per minute to one destination (bursts up to that many).
    max_queued : int
        Notifications waiting per destination; more are dead-lettered at once (``queue_full``).
    remember : int
        Delivery ids remembered per destination, to drop replays.
    """

    def __init__(
        self,
        destinations: Sequence[Destination],
        *,
        dead_letter: ParkEvent,
        retries: int = 5,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        rate_per_minute: float = 120.0,
        max_queued: int = 1000,
        remember: int = 10_000,
        metrics: NotificationMetrics | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        names = [d.name for d in destinations]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"destination names must be unique, got {names}")
        backoff_delays(retries, backoff_base_s, backoff_cap_s, random.Random(0))  # checks them
        if not rate_per_minute >= 1 or max_queued < 1 or remember < 1:
            raise ConfigurationError(
                "notifier: rate_per_minute must be >= 1, max_queued and remember >= 1"
            )
        self.dead_letter = dead_letter
        self.retries = retries
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.rate_per_minute = rate_per_minute
        self.max_queued = max_queued
        self.remember = remember
        self.metrics = metrics
        self.rng = rng or random.Random()
        self.sleep = sleep
        self.clock = clock
        self._destinations = list(destinations)
        self._lanes: dict[str, _Lane] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def destinations(self) -> list[str]:
        return [d.name for d in self._destinations]

    def submit(self, event: Event) -> asyncio.Future[list[None]]:
        """Queue ``event`` for every destination; never waits. The future completes when each
        destination has delivered it or dead-lettered it."""
        if not self._lanes:
            self._lanes = {d.name: _Lane(d, self) for d in self._destinations}
        return asyncio.gather(*(lane.offer(event) for lane in self._lanes.values()))

    async def close(self, timeout_s: float = 5.0) -> None:
        """Give queued notifications ``timeout_s`` to go out, then stop the workers."""
        lanes = list(self._lanes.values())
        if lanes:
            joins = [asyncio.ensure_future(lane.queue.join()) for lane in lanes]
            _, late = await asyncio.wait(joins, timeout=timeout_s)
            for join in late:
                join.cancel()
        for lane in lanes:
            if lane.worker is not None:
                lane.worker.cancel()
        await asyncio.gather(
            *(lane.worker for lane in lanes if lane.worker is not None),
            *self._tasks,
            return_exceptions=True,
        )
        for destination in self._destinations:
            await destination.close()

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _count(self, destination: str, result: str) -> None:
        if self.metrics:
            self.metrics.deliveries.labels(destination, result).inc()

    def _attempt(self, destination: str, outcome: str) -> None:
        if self.metrics:
            self.metrics.attempts.labels(destination, outcome).inc()


def destinations_from_config(
    items: Sequence[Mapping[str, Any]], *, secrets: Mapping[str, str], timeout_s: float
) -> list[Destination]:
    """Destinations from their JSON description (a destinations file).

    Each item has ``name`` and ``type`` (``webhook``, ``slack`` or ``sns``); webhooks take
    ``url`` and optionally ``secret_env`` (the environment variable holding the HMAC secret);
    SNS takes ``topic_arn`` and optionally ``region`` and ``endpoint_url``.

    Raises
    ------
    ConfigurationError
        naming the item and the problem.
    """
    out: list[Destination] = []
    for index, item in enumerate(items):
        where = f"destination {index} ({item.get('name', '?')})"
        try:
            kind, name = item["type"], item["name"]
            known = {
                "name",
                "type",
                "url",
                "secret_env",
                "topic_arn",
                "region",
                "endpoint_url",
                "host",
                "port",
                "username",
                "password_env",
                "topic_prefix",
                "discovery_prefix",
            }
            unknown = sorted(set(item) - known)
            if unknown:
                raise ConfigurationError(f"{where}: unknown keys {unknown}")
            if kind in ("webhook", "slack"):
                secret = None
                if item.get("secret_env"):
                    secret = secrets.get(item["secret_env"])
                    if not secret:
                        raise ConfigurationError(
                            f"{where}: the environment variable {item['secret_env']} is not set"
                        )
                out.append(
                    WebhookDestination(
                        name,
                        item["url"],
                        secret=secret,
                        style="slack" if kind == "slack" else "json",
                        timeout_s=timeout_s,
                    )
                )
            elif kind == "sns":
                out.append(
                    SnsDestination(
                        name,
                        item["topic_arn"],
                        region=item.get("region"),
                        endpoint_url=item.get("endpoint_url"),
                        timeout_s=timeout_s,
                    )
                )
            elif kind == "mqtt":
                password = None
                if item.get("password_env"):
                    password = secrets.get(item["password_env"])
                    if not password:
                        raise ConfigurationError(
                            f"{where}: the environment variable {item['password_env']} is not set"
                        )
                out.append(
                    MqttDestination(
                        name,
                        item["host"],
                        int(item.get("port", 1883)),
                        username=item.get("username"),
                        password=password,
                        topic_prefix=item.get("topic_prefix", "soundsentry"),
                        discovery_prefix=item.get("discovery_prefix", "homeassistant"),
                        timeout_s=timeout_s,
                    )
                )
            else:
                raise ConfigurationError(
                    f"{where}: type {kind!r} is not webhook, slack, sns or mqtt"
                )
        except KeyError as exc:
            raise ConfigurationError(f"{where}: missing {exc.args[0]!r}") from exc
    return out
