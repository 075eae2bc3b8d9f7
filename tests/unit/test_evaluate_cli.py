from __future__ import annotations

import json
from pathlib import Path

import pytest

from soundsentry.cli import main
from soundsentry.evaluation import EvaluationInputError, read_event_list


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
