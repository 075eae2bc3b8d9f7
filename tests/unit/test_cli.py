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
