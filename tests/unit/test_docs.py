"""Documentation that is generated from code must match the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from soundsentry.services.catalog import SETTINGS


@pytest.mark.parametrize(
    "generator", ["gen_config_docs.py", "gen_dashboards.py", "gen_prometheus_rule.py"]
)
def test_generated_files_are_up_to_date(repo_root: Path, generator: str) -> None:
    """README's configuration reference, the Grafana dashboards, the k8s PrometheusRule."""
    result = subprocess.run(
        [sys.executable, str(repo_root / "tools" / generator), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_setting_is_documented_with_a_meaning() -> None:
    for cls in SETTINGS:
        for name, field in cls.model_fields.items():
            assert field.description, f"{cls.__name__}.{name} has no description"
