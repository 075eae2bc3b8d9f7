from __future__ import annotations

import pytest

from soundsentry import __version__
from soundsentry.cli import main


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
