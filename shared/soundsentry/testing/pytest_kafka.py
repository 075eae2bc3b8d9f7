"""pytest fixtures for tests against a real Kafka broker.

Enable with ``pytest_plugins = ["soundsentry.testing.pytest_kafka"]`` in a conftest.py.

One broker serves the whole test session, found in this order:

1. ``KAFKA_BOOTSTRAP_SERVERS`` when set (an existing cluster; nothing is started or stopped);
2. a testcontainers ``apache/kafka`` container when a Docker engine answers;
3. else a local KRaft broker from the Maven jars (:mod:`soundsentry.testing.kafka_broker`),
   fetched once into ``~/.cache/soundsentry/kafka`` (or ``$SOUNDSENTRY_KAFKA_CACHE``), the
   folder ``soundsentry kafka-local`` uses too.

``SOUNDSENTRY_TEST_KAFKA=docker|local`` forces one of the last two. The broker is started only
when a test asks for it, stopped when the session ends (also after failures and Ctrl-C), and its
log is attached to the report of every failing test that used it. Each test gets its own topics
(uuid names) and consumer group.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from soundsentry.runtime.settings import KafkaSettings
from soundsentry.runtime.topics import TopicLayout, ensure_topics
from soundsentry.testing.kafka_broker import (
    KAFKA_VERSION,
    LocalKafka,
    default_cache_dir,
    fetch_kafka,
    free_port,
)

logger = logging.getLogger(__name__)

_LOG_TAIL_LINES = 200


class BrokerHandle(Protocol):
    @property
    def bootstrap_servers(self) -> str: ...

    def log_tail(self, lines: int = ...) -> str: ...


class _ExternalBroker:
    def __init__(self, bootstrap_servers: str) -> None:
        self.bootstrap_servers = bootstrap_servers

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        return f"(external broker {self.bootstrap_servers}: its log is not available here)"


class _ContainerBroker:
    """apache/kafka in Docker, single-node KRaft, advertised on a fixed free host port."""

    def __init__(self, version: str = KAFKA_VERSION) -> None:
        from testcontainers.core.container import DockerContainer  # noqa: PLC0415

        self.port = free_port()
        self.container = (
            DockerContainer(f"apache/kafka:{version}")
            .with_bind_ports(9092, self.port)
            .with_env("KAFKA_NODE_ID", "1")
            .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
            .with_env("KAFKA_LISTENERS", "PLAINTEXT://:9092,CONTROLLER://:9093")
            .with_env("KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://127.0.0.1:{self.port}")
            .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
            .with_env(
                "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
            )
            .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
            .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
            .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
            .with_env("KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS", "4")
            .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
            .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
            .with_env("KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR", "1")
            .with_env("KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR", "1")
            .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        )
        self.bootstrap_servers = f"127.0.0.1:{self.port}"

    def start(self) -> None:
        from testcontainers.core.waiting_utils import wait_for_logs  # noqa: PLC0415

        self.container.start()
        wait_for_logs(self.container, "Kafka Server started", timeout=120)

    def stop(self) -> None:
        self.container.stop()

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        out, err = self.container.get_logs()
        text = (out + err).decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def docker_available() -> bool:
    """True when a Docker engine answers (a docker CLI alone is not enough)."""
    try:
        import docker  # noqa: PLC0415

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # any failure to reach an engine means: no engine
        return False


_broker: BrokerHandle | None = None
_summary: list[str] = []


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest) -> Iterator[str]:
    """``host:port`` of the session's Kafka broker (see the module docstring for which one)."""
    global _broker  # noqa: PLW0603 - the report hook reads the session's broker
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        _broker = _ExternalBroker(external)
        _summary.append(f"Kafka: external cluster {external}")
        yield external
        return
    mode = os.environ.get("SOUNDSENTRY_TEST_KAFKA") or ("docker" if docker_available() else "local")
    if mode == "docker":
        container = _ContainerBroker()
        _broker = container
        container.start()
        _summary.append(f"Kafka {KAFKA_VERSION} (Docker) on {container.bootstrap_servers}")
        try:
            yield container.bootstrap_servers
        finally:
            container.stop()
        return
    if mode != "local":
        raise pytest.UsageError(f"SOUNDSENTRY_TEST_KAFKA must be docker or local, got {mode!r}")
    root = Path(str(request.config.rootpath))
    libs = fetch_kafka(KAFKA_VERSION, default_cache_dir())  # $SOUNDSENTRY_KAFKA_CACHE or ~/.cache
    workdir = root / ".kafka" / uuid.uuid4().hex[:8]
    broker = LocalKafka(libs=libs, workdir=workdir)
    _broker = broker
    broker.start()
    _summary.append(
        f"Kafka {KAFKA_VERSION} (local KRaft broker from Maven jars) on "
        f"{broker.bootstrap_servers}, started in {broker.startup_seconds:.1f} s; "
        f"log: {broker.log_path}"
    )
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()
        _broker = None
        # Keep the log for a post-mortem, drop the (large) log segments.
        shutil.rmtree(workdir / "data", ignore_errors=True)


@pytest.fixture(scope="session")
def local_kafka(kafka_bootstrap: str) -> LocalKafka:
    """The session's :class:`LocalKafka`, for tests that stop or kill the broker."""
    if not isinstance(_broker, LocalKafka):
        pytest.skip("needs the harness's own local broker (not an external or Docker one)")
    return _broker


@pytest.fixture
def kafka_settings(kafka_bootstrap: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=kafka_bootstrap, client_id="soundsentry-tests")


@pytest.fixture
def consumer_group() -> str:
    """A consumer group id no other test uses."""
    return f"test-{uuid.uuid4().hex[:12]}"


TopicFactory = Callable[..., Awaitable[str]]


@pytest.fixture
async def topic_factory(kafka_settings: KafkaSettings) -> AsyncIterator[TopicFactory]:
    """``await topic_factory(partitions=1)`` creates a uuid-named topic, deleted after the test."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: PLC0415

    admin = AIOKafkaAdminClient(**kafka_settings.aiokafka_kwargs())
    await admin.start()
    created: list[str] = []

    async def create(*, partitions: int = 1, config: dict[str, str] | None = None) -> str:
        name = f"test-{uuid.uuid4().hex[:12]}"
        response = await admin.create_topics(
            [NewTopic(name, partitions, 1, topic_configs=config or {})]
        )
        for topic, code, message in response.topic_errors:
            if code:
                raise RuntimeError(f"cannot create test topic {topic}: {code} {message}")
        created.append(name)
        return name

    try:
        yield create
    finally:
        if created:
            await admin.delete_topics(created)
        await admin.close()


@pytest.fixture
async def topic_layout(kafka_settings: KafkaSettings) -> AsyncIterator[TopicLayout]:
    """All SoundSentry topics (and dead-letter topics) under a prefix of this test's own."""
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415

    layout = TopicLayout(prefix=f"t{uuid.uuid4().hex[:10]}.", partitions=2, replication_factor=1)
    await ensure_topics(kafka_settings, layout)
    try:
        yield layout
    finally:
        admin = AIOKafkaAdminClient(**kafka_settings.aiokafka_kwargs())
        await admin.start()
        try:
            await admin.delete_topics([t.name for t in layout.physical_topics()])
        finally:
            await admin.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that use the broker are marked `kafka`, so `-m "not kafka"` runs without one.
    for item in items:
        if "kafka_bootstrap" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome: Any = yield
    report = outcome.get_result()
    if (
        report.failed
        and _broker is not None
        and "kafka_bootstrap" in getattr(item, "fixturenames", ())
    ):
        report.sections.append(
            (f"Kafka broker log (last {_LOG_TAIL_LINES} lines)", _broker.log_tail(_LOG_TAIL_LINES))
        )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in _summary:
        terminalreporter.write_line(line)
