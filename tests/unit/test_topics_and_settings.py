from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from soundsentry.exceptions import ConfigurationError, ContractError
from soundsentry.runtime.deadletter import MAX_PARKED_VALUE_BYTES, dead_letter
from soundsentry.runtime.settings import KafkaSettings, TopicSettings
from soundsentry.runtime.topics import ALL_TOPICS, AUDIO, DLQ_PARTITIONS, EVENTS, TopicLayout


def test_layout_names_main_and_dead_letter_topics_under_the_prefix() -> None:
    layout = TopicLayout(prefix="city-a.", partitions=48, replication_factor=3)
    assert layout.name(AUDIO) == "city-a.audio.pcm"
    assert layout.dlq(EVENTS) == "city-a.audio.events.dlq"
    topics = {t.name: t for t in layout.physical_topics()}
    assert len(topics) == 2 * len(ALL_TOPICS)
    assert topics["city-a.audio.pcm"].partitions == 48
    assert topics["city-a.audio.pcm.dlq"].partitions == DLQ_PARTITIONS
    assert all(t.replication_factor == 3 for t in topics.values())
    assert topics["city-a.audio.events"].config == {"retention.ms": str(EVENTS.retention_ms)}


def test_topic_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOUNDSENTRY_TOPICS_PREFIX", "staging.")
    monkeypatch.setenv("SOUNDSENTRY_TOPICS_PARTITIONS", "24")
    layout = TopicLayout.from_settings(TopicSettings())
    assert layout == TopicLayout(prefix="staging.", partitions=24, replication_factor=1)


@pytest.mark.parametrize(
    "kwargs",
    [{"partitions": 0}, {"prefix": "has space"}, {"replication_factor": 9}, {"unknown": 1}],
)
def test_topic_settings_reject_values_that_cannot_work(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TopicSettings(**kwargs)  # type: ignore[arg-type]


def test_settings_are_frozen() -> None:
    settings = TopicSettings()
    with pytest.raises(ValidationError):
        settings.partitions = 3  # type: ignore[misc]


def test_kafka_settings_normalise_hosts_and_reject_garbage() -> None:
    settings = KafkaSettings(bootstrap_servers=" a:9092 , b:9093 ")
    assert settings.bootstrap_servers == "a:9092,b:9093"
    assert settings.faust_broker_url() == "soundsentry://a:9092;b:9093"
    with pytest.raises(ValidationError, match="host:port"):
        KafkaSettings(bootstrap_servers="no-port")


def test_kafka_password_is_masked_when_printed_and_passed_to_the_client() -> None:
    settings = KafkaSettings(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="sensor-gw",
        sasl_password="hunter2",  # type: ignore[arg-type]
    )
    assert "hunter2" not in repr(settings)
    kwargs = settings.aiokafka_kwargs()
    assert kwargs["sasl_plain_password"] == "hunter2"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"


def test_stream_services_get_the_same_tls_and_sasl_settings_as_the_clients() -> None:
    from faust.auth import SASLCredentials, SSLCredentials  # noqa: PLC0415

    assert KafkaSettings().faust_credentials() is None
    sasl = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="featurizer",
        sasl_password="hunter2",  # type: ignore[arg-type]
    ).faust_credentials()
    assert isinstance(sasl, SASLCredentials)
    assert (sasl.username, sasl.password) == ("featurizer", "hunter2")
    assert (sasl.protocol.value, sasl.mechanism.value) == ("SASL_SSL", "SCRAM-SHA-512")
    tls = KafkaSettings(security_protocol="SSL").faust_credentials()
    assert isinstance(tls, SSLCredentials)
    assert tls.protocol.value == "SSL"


def test_dead_letter_keeps_the_record_and_says_why_and_where_from() -> None:
    error = ContractError("undecodable", "12 bytes are not a valid soundsentry.v1.AudioChunk")
    letter = dead_letter(
        error,
        key=b"mic-1",
        value=b"\xff" * 12,
        service="featurizer",
        source_topic="audio.pcm",
        partition=3,
        offset=1234,
    )
    headers = dict(letter.headers)
    assert (letter.key, letter.value, letter.reason) == (b"mic-1", b"\xff" * 12, "undecodable")
    assert headers["soundsentry.error.reason"] == b"undecodable"
    assert headers["soundsentry.error.message"].startswith(b"12 bytes are not")
    assert headers["soundsentry.source.topic"] == b"audio.pcm"
    assert headers["soundsentry.source.partition"] == b"3"
    assert headers["soundsentry.source.offset"] == b"1234"
    assert headers["soundsentry.service"] == b"featurizer"


def test_dead_letter_bounds_a_huge_error_message() -> None:
    letter = dead_letter(
        ContractError("undecodable", "x" * 100_000),
        key=None,
        value=b"",
        service="s",
        source_topic="t",
        partition=0,
        offset=0,
    )
    assert len(dict(letter.headers)["soundsentry.error.message"]) == 2048


def test_dead_letter_of_a_huge_record_fits_a_request_and_says_what_was_cut() -> None:
    # A record as large as the broker takes (about 1 MiB) plus headers would not fit the
    # producer's 1 MiB request: parking it would fail and stop the stage.
    value = bytes(range(256)) * 4095
    letter = dead_letter(
        ContractError("undecodable", "garbage"),
        key=b"k" * 5000,
        value=value,
        service="featurizer",
        source_topic="audio.pcm",
        partition=0,
        offset=7,
    )
    headers = dict(letter.headers)
    assert letter.value == value[:MAX_PARKED_VALUE_BYTES]
    assert headers["soundsentry.value.size"] == str(len(value)).encode()
    assert headers["soundsentry.value.sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert letter.key == b"k" * 2048
    assert headers["soundsentry.key.size"] == b"5000"
    size = len(letter.value) + len(letter.key) + sum(len(k) + len(v) for k, v in letter.headers)
    assert size < 1024 * 1024 - 4096


def test_local_broker_formats_with_cluster_ids_that_look_like_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A URL-safe base64 cluster id may begin with "-"; the format command must still take it.
    from soundsentry.testing import kafka_broker  # noqa: PLC0415

    calls: list[list[str]] = []

    def fake_run(args: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        calls.append(args)
        return subprocess.CompletedProcess(args, 1, "", "stop here")

    monkeypatch.setattr(kafka_broker, "_kafka_cluster_id", lambda: "-starts-with-a-dash-id")
    monkeypatch.setattr(kafka_broker.subprocess, "run", fake_run)
    broker = kafka_broker.LocalKafka(libs=tmp_path, workdir=tmp_path / "w")
    with pytest.raises(ConfigurationError, match="formatting"):
        broker.start()
    assert "--cluster-id=-starts-with-a-dash-id" in calls[0]


def test_retention_of_main_topics_can_be_set_per_topic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "SOUNDSENTRY_TOPICS_RETENTION_HOURS", '{"audio.pcm": 2, "audio.windows": 0.5}'
    )
    layout = TopicLayout.from_settings(TopicSettings())
    retention = {t.name: int(t.config["retention.ms"]) for t in layout.physical_topics()}
    assert retention["audio.pcm"] == 2 * 3_600_000
    assert retention["audio.windows"] == 1_800_000
    assert retention["audio.events"] == EVENTS.retention_ms  # not named: its own
    assert retention["audio.pcm.dlq"] == retention["audio.events.dlq"]  # dead letters unchanged


def test_retention_of_an_unknown_topic_or_of_no_time_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown topics \['audio.wav'\]"):
        TopicLayout.from_settings(TopicSettings(retention_hours={"audio.wav": 1}))
    with pytest.raises(ValidationError, match="positive number of hours"):
        TopicSettings(retention_hours={"audio.pcm": 0})
