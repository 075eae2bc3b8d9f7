"""Notifications for real: webhooks to an HTTP server on 127.0.0.1, SNS through moto's server,
retries, refusals, dead letters, duplicates, rate limits, and lanes that do not wait on each
other."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import socket
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from soundsentry.contracts import Event, EventKind
from soundsentry.exceptions import ConfigurationError
from soundsentry.notify.notifier import (
    MqttDestination,
    NotificationMetrics,
    Notifier,
    SnsDestination,
    WebhookDestination,
    destinations_from_config,
    event_payload,
    slack_payload,
)

SECRET = "s3cret"


def event(kind: int = EventKind.EVENT_KIND_STARTED, event_id: str = "e1") -> Event:
    message = Event(
        event_id=event_id,
        kind=kind,
        sensor_id="site-1/mic-2",
        stream_id="boot-7",
        label="smoke_alarm",
        sample_rate_hz=16_000,
        onset_sample=32_000,
        peak_score=0.93,
        model="default",
        model_version="1.0.0",
    )
    message.onset_time.FromNanoseconds(1_800_000_002_000_000_000)
    if kind == EventKind.EVENT_KIND_ENDED:
        message.offset_sample = 96_000
        message.offset_time.FromNanoseconds(1_800_000_006_000_000_000)
    return message


class Letters:
    def __init__(self) -> None:
        self.parked: list[tuple[str, str, str]] = []

    async def __call__(self, message: Event, destination: str, problem: str) -> None:
        self.parked.append((message.event_id, destination, problem))


def notifier(
    *destinations: Any, letters: Letters, registry: CollectorRegistry, **kw: Any
) -> Notifier:
    sleeps = kw.pop("sleeps", None)

    async def sleep(seconds: float) -> None:
        if sleeps is not None:
            sleeps.append(seconds)

    return Notifier(
        list(destinations),
        dead_letter=letters,
        metrics=NotificationMetrics.create(registry),
        rng=random.Random(3),
        sleep=sleep,
        **kw,
    )


def count(registry: CollectorRegistry, destination: str, result: str) -> float:
    value = registry.get_sample_value(
        "soundsentry_notifications_total", {"destination": destination, "result": result}
    )
    return value or 0.0


async def test_a_webhook_gets_signed_json_naming_the_event(aiohttp_receiver: Any) -> None:
    receiver = await aiohttp_receiver()
    registry, letters = CollectorRegistry(), Letters()
    hook = WebhookDestination("ops", receiver.url, secret=SECRET, clock=lambda: 1_800_000_010.0)
    runner = notifier(hook, letters=letters, registry=registry)
    await runner.submit(event(EventKind.EVENT_KIND_ENDED))
    await runner.close()
    ((headers, body),) = receiver.requests
    payload = json.loads(body)
    assert payload == event_payload(event(EventKind.EVENT_KIND_ENDED))
    assert payload["kind"] == "ended"
    assert payload["onset"] == "2027-01-15T08:00:02Z"
    assert payload["offset_s"] == 6.0
    assert headers["X-SoundSentry-Delivery-Id"] == "e1:ended"
    assert headers["X-SoundSentry-Timestamp"] == "1800000010"
    expected = hmac.new(SECRET.encode(), b"1800000010." + body, hashlib.sha256).hexdigest()
    assert headers["X-SoundSentry-Signature"] == f"sha256={expected}"
    assert count(registry, "ops", "delivered") == 1


async def test_a_slack_webhook_gets_a_message(aiohttp_receiver: Any) -> None:
    receiver = await aiohttp_receiver()
    runner = notifier(
        WebhookDestination("chat", receiver.url, style="slack"),
        letters=Letters(),
        registry=CollectorRegistry(),
    )
    await runner.submit(event())
    await runner.close()
    ((headers, body),) = receiver.requests
    assert json.loads(body) == slack_payload(event())
    assert "*smoke alarm*" in json.loads(body)["text"]
    assert "X-SoundSentry-Signature" not in headers


async def test_server_errors_are_retried_with_backoff(aiohttp_receiver: Any) -> None:
    receiver = await aiohttp_receiver(statuses=[503, 429])
    registry, letters, sleeps = CollectorRegistry(), Letters(), []
    runner = notifier(
        WebhookDestination("ops", receiver.url),
        letters=letters,
        registry=registry,
        sleeps=sleeps,
        retries=3,
        backoff_base_s=1.0,
        backoff_cap_s=8.0,
    )
    await runner.submit(event())
    await runner.close()
    assert len(receiver.requests) == 3
    assert len(sleeps) == 2
    assert 0 <= sleeps[0] <= 1.0
    assert 0 <= sleeps[1] <= 2.0
    assert count(registry, "ops", "delivered") == 1
    assert letters.parked == []


async def test_refused_and_exhausted_deliveries_are_dead_lettered(aiohttp_receiver: Any) -> None:
    refusing = await aiohttp_receiver(statuses=[400])
    failing = await aiohttp_receiver(statuses=[500] * 10)
    registry, letters = CollectorRegistry(), Letters()
    runner = notifier(
        WebhookDestination("refusing", refusing.url),
        WebhookDestination("failing", failing.url),
        letters=letters,
        registry=registry,
        retries=2,
    )
    await runner.submit(event())
    await runner.close()
    assert len(refusing.requests) == 1  # a refusal is not retried
    assert len(failing.requests) == 3
    assert sorted((d, p.split(":")[0]) for _, d, p in letters.parked) == [
        ("failing", "retries_exhausted"),
        ("refusing", "refused"),
    ]
    assert count(registry, "failing", "dead_lettered") == 1


async def test_a_hanging_destination_does_not_delay_the_others(aiohttp_receiver: Any) -> None:
    stuck = await aiohttp_receiver(hold=asyncio.Event())
    fine = await aiohttp_receiver()
    registry = CollectorRegistry()
    runner = notifier(
        WebhookDestination("stuck", stuck.url, timeout_s=30.0),
        WebhookDestination("fine", fine.url),
        letters=Letters(),
        registry=registry,
    )
    first = runner.submit(event(event_id="a"))
    second = runner.submit(event(event_id="b"))
    while len(fine.requests) < 2:  # noqa: ASYNC110 - waits on another task's progress
        await asyncio.sleep(0.01)
    assert not first.done()
    assert not second.done()
    assert len(stuck.requests) == 1  # one at a time per destination
    stuck.hold.set()
    await asyncio.gather(first, second)
    await runner.close()
    assert count(registry, "stuck", "delivered") == count(registry, "fine", "delivered") == 2


async def test_a_replayed_event_is_delivered_once(aiohttp_receiver: Any) -> None:
    receiver = await aiohttp_receiver()
    registry = CollectorRegistry()
    runner = notifier(WebhookDestination("ops", receiver.url), letters=Letters(), registry=registry)
    await runner.submit(event())
    await runner.submit(event())
    await runner.submit(event(EventKind.EVENT_KIND_ENDED))  # another delivery of the same event
    await runner.close()
    assert [h["X-SoundSentry-Delivery-Id"] for h, _ in receiver.requests] == [
        "e1:started",
        "e1:ended",
    ]
    assert count(registry, "ops", "duplicate") == 1


async def test_the_rate_limit_spaces_requests_out(aiohttp_receiver: Any) -> None:
    receiver = await aiohttp_receiver()
    now = [0.0]
    sleeps: list[float] = []
    runner = notifier(
        WebhookDestination("ops", receiver.url),
        letters=Letters(),
        registry=CollectorRegistry(),
        sleeps=sleeps,
        rate_per_minute=2.0,
        clock=lambda: now[0],
    )
    await asyncio.gather(*(runner.submit(event(event_id=f"e{i}")) for i in range(4)))
    await runner.close()
    assert len(receiver.requests) == 4
    # A burst of two, then one every 30 s (the clock stands still: waits add up).
    assert sleeps == pytest.approx([30.0, 60.0])


async def test_a_full_queue_dead_letters_at_once(aiohttp_receiver: Any) -> None:
    stuck = await aiohttp_receiver(hold=asyncio.Event())
    letters = Letters()
    runner = notifier(
        WebhookDestination("stuck", stuck.url, timeout_s=30.0),
        letters=letters,
        registry=CollectorRegistry(),
        max_queued=1,
    )
    runner.submit(event(event_id="a"))
    await asyncio.sleep(0.05)  # "a" is in flight, the queue is empty again
    runner.submit(event(event_id="b"))  # waits in the queue
    third = runner.submit(event(event_id="c"))  # no room
    await third
    assert [(e, p.split(":")[0]) for e, _, p in letters.parked] == [("c", "queue_full")]
    stuck.hold.set()
    await runner.close()


async def test_sns_gets_the_event_with_its_ids(moto_endpoint: str) -> None:
    import boto3  # noqa: PLC0415

    sns = boto3.client("sns", region_name="eu-west-1", endpoint_url=moto_endpoint)
    sqs = boto3.client("sqs", region_name="eu-west-1", endpoint_url=moto_endpoint)
    topic = sns.create_topic(Name="alarms")["TopicArn"]
    queue = sqs.create_queue(QueueName="alarms-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    registry = CollectorRegistry()
    runner = notifier(
        SnsDestination("sns", topic, endpoint_url=moto_endpoint),
        letters=Letters(),
        registry=registry,
    )
    await runner.submit(event())
    await runner.close()
    (received,) = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    envelope = json.loads(received["Body"])
    assert json.loads(envelope["Message"]) == event_payload(event())
    assert envelope["MessageAttributes"]["delivery_id"]["Value"] == "e1:started"
    assert count(registry, "sns", "delivered") == 1


def test_destinations_are_read_from_their_description() -> None:
    made = destinations_from_config(
        [
            {"name": "ops", "type": "webhook", "url": "https://example.org/h", "secret_env": "S"},
            {"name": "chat", "type": "slack", "url": "https://example.org/s"},
        ],
        secrets={"S": "x"},
        timeout_s=2.0,
    )
    assert [d.name for d in made] == ["ops", "chat"]
    for items, problem in [
        ([{"name": "a", "type": "pager", "url": "https://x"}], "type"),
        ([{"name": "a", "type": "webhook"}], "missing 'url'"),
        ([{"name": "a", "type": "webhook", "url": "ftp://x"}], "not an http"),
        ([{"name": "a", "type": "webhook", "url": "https://x", "secret_env": "NOPE"}], "NOPE"),
        ([{"name": "a", "type": "sns", "topic_arn": "nope"}], "SNS topic ARN"),
        ([{"name": "a", "type": "webhook", "url": "https://x", "colour": "red"}], "unknown"),
    ]:
        with pytest.raises(ConfigurationError, match=problem):
            destinations_from_config(items, secrets={}, timeout_s=2.0)


async def test_mqtt_gets_home_assistant_discovery_state_and_attributes(mosquitto: int) -> None:
    import aiomqtt  # noqa: PLC0415

    destination = MqttDestination("home", "127.0.0.1", mosquitto)
    config, state, attributes = destination.topics("site-1/mic-2", "smoke_alarm")
    assert state == "soundsentry/site-1_mic-2/smoke_alarm/state"
    registry = CollectorRegistry()
    runner = notifier(destination, letters=Letters(), registry=registry)
    await runner.submit(event())
    await runner.submit(event(EventKind.EVENT_KIND_ENDED))
    await runner.close()
    # Retained: a client that subscribes afterwards (Home Assistant restarting) sees them.
    seen: dict[str, bytes] = {}
    async with aiomqtt.Client("127.0.0.1", mosquitto) as client:
        await client.subscribe("#", qos=1)
        async with asyncio.timeout(10):
            async for message in client.messages:
                seen[str(message.topic)] = bytes(message.payload)
                if len(seen) == 3:
                    break
    discovery = json.loads(seen[config])
    assert discovery["device_class"] == "smoke"
    assert discovery["state_topic"] == state
    assert seen[state] == b"OFF"  # the last event ended it
    assert json.loads(seen[attributes]) == event_payload(event(EventKind.EVENT_KIND_ENDED))
    assert count(registry, "home", "delivered") == 2


async def test_an_unreachable_mqtt_broker_is_retried_then_dead_lettered() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here
    letters = Letters()
    runner = notifier(
        MqttDestination("home", "127.0.0.1", port, timeout_s=1.0),
        letters=letters,
        registry=CollectorRegistry(),
        retries=1,
    )
    await runner.submit(event())
    await runner.close()
    assert [(d, p.split(":")[0]) for _, d, p in letters.parked] == [("home", "retries_exhausted")]


class Broken:
    """A destination with a bug: anything but a DeliveryError out of send()."""

    name = "broken"

    def __init__(self) -> None:
        self.calls = 0

    async def send(self, message: Event) -> None:
        self.calls += 1
        raise KeyError("a bug")

    async def close(self) -> None:
        return None


async def test_an_unexpected_failure_parks_the_event_and_the_lane_goes_on(
    aiohttp_receiver: Any,
) -> None:
    receiver = await aiohttp_receiver()
    registry, letters = CollectorRegistry(), Letters()
    broken = Broken()
    runner = notifier(
        broken, WebhookDestination("ops", receiver.url), letters=letters, registry=registry
    )
    # An ended event whose offset lies past year 9999 cannot be rendered as an ISO time.
    far = event(EventKind.EVENT_KIND_ENDED, event_id="far")
    far.offset_time.seconds = 10**12
    await runner.submit(far)
    await runner.submit(event(event_id="next"))
    await runner.close()  # completes: no worker died holding the queue
    assert broken.calls == 2  # not retried, and the second event still reached the lane
    assert sorted((e, d, p.split(":")[0]) for e, d, p in letters.parked) == [
        ("far", "broken", "failed"),
        ("far", "ops", "failed"),
        ("next", "broken", "failed"),
    ]
    assert [h["X-SoundSentry-Delivery-Id"] for h, _ in receiver.requests] == ["next:started"]
    assert count(registry, "ops", "delivered") == 1
    assert count(registry, "ops", "dead_lettered") == 1


async def test_a_failing_dead_letter_is_counted_and_the_lane_goes_on() -> None:
    registry = CollectorRegistry()

    async def unparkable(message: Event, destination: str, problem: str) -> None:
        raise OSError("the broker is gone")

    runner = Notifier(
        [Broken()],
        dead_letter=unparkable,
        metrics=NotificationMetrics.create(registry),
    )
    await runner.submit(event(event_id="a"))
    await runner.submit(event(event_id="b"))
    await runner.close()
    assert count(registry, "broken", "lost") == 2
