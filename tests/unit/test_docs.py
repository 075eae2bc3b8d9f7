"""Documentation that is generated from code must match the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_readme_configuration_reference_is_up_to_date(repo_root: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(repo_root / "tools" / "gen_config_docs.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_setting_is_documented_with_a_meaning(repo_root: Path) -> None:
    sys.path.insert(0, str(repo_root / "tools"))
    try:
        import gen_config_docs  # noqa: PLC0415
    finally:
        sys.path.pop(0)
    for cls in gen_config_docs.SETTINGS:
        for name, field in cls.model_fields.items():
            assert field.description, f"{cls.__name__}.{name} has no description"
