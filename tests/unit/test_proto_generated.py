"""The committed generated code must be exactly what `make proto` produces now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_generated_code_is_up_to_date(repo_root: Path, tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(repo_root / "tools" / "gen_proto.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    fresh = {p.name: p.read_bytes() for p in (tmp_path / "soundsentry" / "v1").glob("*_pb2*")}
    committed_dir = repo_root / "shared" / "soundsentry" / "v1"
    committed = {p.name: p.read_bytes() for p in committed_dir.glob("*_pb2*")}
    assert fresh, "the generator produced nothing"
    assert sorted(fresh) == sorted(committed), "generated file set differs: run `make proto`"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated code {stale}: run `make proto` and commit the result"
