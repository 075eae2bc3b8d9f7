from __future__ import annotations

import time
from pathlib import Path

import pytest
import soundfile

from soundsentry import __version__
from soundsentry.cli import _recorded_start_ns, main
from soundsentry.testing.kafka_broker import free_port


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"soundsentry {__version__}"


def test_topics_list_shows_the_layout_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SOUNDSENTRY_TOPICS_PREFIX", "lab.")
    monkeypatch.setenv("SOUNDSENTRY_TOPICS_PARTITIONS", "6")
    assert main(["topics", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("lab.audio.pcm\tpartitions=6")
    assert any(line.startswith("lab.audio.events.dlq\tpartitions=1") for line in lines)


def test_a_subcommand_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_a_misspelled_setting_is_refused_with_the_nearest_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SOUNDSENTRY_TOPICS_PARTITION", "3")
    assert main(["topics", "list"]) == 2
    error = capsys.readouterr().err
    assert "SOUNDSENTRY_TOPICS_PARTITION is not a setting" in error
    assert "did you mean SOUNDSENTRY_TOPICS_PARTITIONS?" in error


def test_names_outside_the_settings_prefixes_are_the_users(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A destinations file may name any variable for a secret; the harness reads KAFKA_CACHE.
    monkeypatch.setenv("SOUNDSENTRY_OPS_WEBHOOK_SECRET", "s")
    monkeypatch.setenv("SOUNDSENTRY_KAFKA_CACHE", "/tmp/kafka")
    assert main(["topics", "list"]) == 0
    assert "audio.pcm" in capsys.readouterr().out


def test_the_first_mistakes_get_one_line_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()  # nothing listens there
    monkeypatch.setenv("SOUNDSENTRY_KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{port}")
    assert main(["topics", "create"]) == 2
    assert "cannot reach Kafka" in capsys.readouterr().err
    example = str(
        Path(__file__).resolve().parents[2] / "examples" / "audio" / "kitchen_alarms.flac"
    )
    assert main(["push", example, "--sensor", "a", "--target", f"127.0.0.1:{port}"]) == 2
    assert "is soundsentry ingest (or serve) running there" in capsys.readouterr().err
    monkeypatch.delenv("SOUNDSENTRY_INGEST_TOKENS_FILE", raising=False)
    monkeypatch.delenv("SOUNDSENTRY_INGEST_ALLOW_ANONYMOUS", raising=False)
    assert main(["ingest"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("soundsentry: error: invalid IngestSettings: ")
    assert "SOUNDSENTRY_INGEST_ALLOW_ANONYMOUS=true" in error
    assert "Traceback" not in error


def test_a_service_commands_help_lists_the_settings_it_reads(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["classifier", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # help text wraps at any width
    assert "configured by the environment variables below" in out
    assert "SOUNDSENTRY_CLASSIFIER_MODEL_DIR (models)" in out
    assert "SOUNDSENTRY_ESCALATION_" in out
    assert "SOUNDSENTRY_KAFKA_BOOTSTRAP_SERVERS" in out
    assert "SOUNDSENTRY_INGEST_" not in out


def test_detect_keeps_its_columns_for_long_file_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "audio" / "kitchen_alarms.flac"
    long = tmp_path / ("a-very-long-recording-name-from-a-sensor-gateway-" + example.name)
    long.write_bytes(example.read_bytes())
    models = Path(__file__).resolve().parents[2] / "models"
    assert main(["detect", str(long), "--model", str(models)]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert rows
    column = header.index("label")
    assert all(row[column - 1] == " " and row[column] != " " for row in rows)
    assert all(row.index(long.name) == 0 for row in rows)


def test_a_recording_pushed_faster_than_real_time_ends_now_not_in_the_future() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "audio" / "kitchen_alarms.flac"
    before = time.time_ns()
    start = _recorded_start_ns(example)
    after = time.time_ns()
    length_ns = round(soundfile.info(str(example)).duration * 1e9)
    assert before <= start + length_ns <= after
