from __future__ import annotations

import json
from pathlib import Path

import pytest

from soundsentry.cli import main
from soundsentry.evaluation.sed_metrics import (
    EvalEvent,
    EvaluationInputError,
    match_files,
    read_event_list,
)


def test_evaluate_prints_dcase_metrics_for_two_event_lists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reference = tmp_path / "ref.tsv"
    reference.write_text("a.wav\t1.00\t3.00\tsmoke_alarm\na.wav\t5.00\t6.00\tglass_break\nb.wav\n")
    system = tmp_path / "sys.csv"
    system.write_text(
        "file,label,onset_s,offset_s,peak\n"
        "a.wav,smoke_alarm,1.15,3.40,0.9\n"  # onset within 200 ms, offset within 50 % of 2 s
        "a.wav,glass_break,5.50,6.00,0.8\n"  # onset 500 ms late: a miss and an insertion
    )
    assert main(["evaluate", str(reference), str(system)]) == 0
    out = capsys.readouterr().out
    assert "event-based (onset collar 0.2 s" in out
    smoke = next(line for line in out.splitlines() if line.startswith("smoke_alarm"))
    assert smoke.split()[1:4] == ["1", "1", "1.000"]

    assert main(["evaluate", str(reference), str(system), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    overall = report["event_based"]["overall"]
    assert (overall["true_positives"], overall["substitutions"]) == (1, 0)
    assert overall["deletions"] == overall["insertions"] == 1
    assert overall["error_rate"] == pytest.approx(1.0)
    assert report["segment_based"]["overall"]["f1"] > 0.8


def test_a_malformed_event_list_is_named_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text("a.wav\t1.0\t2.0\tsiren\na.wav\tsoon\t2.0\tsiren\n")
    with pytest.raises(EvaluationInputError, match=r"bad\.tsv:2: not an event"):
        read_event_list(path)


def test_evaluate_with_audio_sweeps_each_labels_operating_points(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The shipped example: two smoke-alarm and two CO-alarm cycles, with the default model.
    root = Path(__file__).resolve().parents[2]
    audio = root / "examples" / "audio" / "kitchen_alarms.flac"
    reference = root / "examples" / "audio" / "kitchen_alarms.events.tsv"
    plot = tmp_path / "curve.png"
    args = ["evaluate", str(reference), "--audio", str(audio), "--model", str(root / "models")]
    assert main([*args, "--thresholds", "0.3", "0.99", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("smoke_alarm ")]
    by_threshold = {float(row[1]): row for row in rows}
    assert 0.3 in by_threshold
    assert 0.99 in by_threshold
    assert len(by_threshold) >= 2
    assert float(by_threshold[0.3][2]) > float(by_threshold[0.99][2])  # recall falls
    assert any(row[-1] == "*" for row in rows)  # the card's own threshold is marked
    assert "event-based" in out  # and the events of the card's rules are scored as usual
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_evaluate_needs_either_events_or_audio(tmp_path: Path) -> None:
    reference = tmp_path / "ref.tsv"
    reference.write_text("a.wav\t1.00\t3.00\tsmoke_alarm\n")
    assert main(["evaluate", str(reference)]) == 2
    assert main(["evaluate", str(reference), str(reference), "--audio", "a.wav"]) == 2


def test_evaluate_with_audio_names_reference_files_it_was_not_given(tmp_path: Path) -> None:
    reference = tmp_path / "ref.tsv"
    reference.write_text("elsewhere.wav\t1.00\t3.00\tsmoke_alarm\n")
    root = Path(__file__).resolve().parents[2]
    audio = root / "examples" / "audio" / "kitchen_alarms.flac"
    assert main(["evaluate", str(reference), "--audio", str(audio)]) == 2


def test_files_are_matched_by_name_unless_told_to_match_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # What `detect recordings/kitchen.flac` prints next to a truth file that names files only.
    reference = tmp_path / "ref.tsv"
    reference.write_text("kitchen.flac\t2.00\t4.00\tsmoke_alarm\n")
    system = tmp_path / "sys.csv"
    system.write_text("file,label,onset_s,offset_s\nrecordings/kitchen.flac,smoke_alarm,2.05,4.1\n")
    assert main(["evaluate", str(reference), str(system), "--format", "json"]) == 0
    overall = json.loads(capsys.readouterr().out)["event_based"]["overall"]
    assert overall["f1"] == pytest.approx(1.0)
    # Strict paths share no file: refused with the names, not scored 0.
    assert main(["evaluate", str(reference), str(system), "--match", "path"]) == 2
    error = capsys.readouterr().err
    assert "no detected event is in a file the reference names (matched by path)" in error
    assert "recordings/kitchen.flac" in error


def test_a_reference_without_events_or_with_clashing_names_is_refused(tmp_path: Path) -> None:
    empty = [EvalEvent("a.wav", "siren", 0.0, 1.0)]
    with pytest.raises(EvaluationInputError, match="reference holds no events"):
        match_files([], empty)
    clash = [EvalEvent("x/a.wav", "siren", 0.0, 1.0), EvalEvent("y/a.wav", "siren", 0.0, 1.0)]
    with pytest.raises(EvaluationInputError, match=r"share the name 'a\.wav'"):
        match_files(clash, empty)
    ours, theirs = match_files(clash, [EvalEvent("x/a.wav", "siren", 0.1, 1.0)], by="path")
    assert [e.file_id for e in ours] == ["x/a.wav", "y/a.wav"]
    assert [e.file_id for e in theirs] == ["x/a.wav"]
