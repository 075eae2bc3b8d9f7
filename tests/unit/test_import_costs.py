"""What a service loads: the services without a Faust app never import Faust.

The import rules themselves are import-linter contracts (pyproject.toml, run by ``make lint``);
this checks what the rules cannot see, the modules a fresh interpreter ends up with.
"""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module",
    [
        "soundsentry.services.ingest.server",
        "soundsentry.services.featurizer.app",
        "soundsentry.services.classifier.app",
    ],
)
def test_services_without_a_faust_app_do_not_load_faust(module: str) -> None:
    # A fresh interpreter: this test process has imported Faust long ago.
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys, {module}; print(sorted({{m.split('.')[0] for m in sys.modules}}))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    assert "'faust'" not in loaded
    assert "'mode'" not in loaded  # Faust's service framework
