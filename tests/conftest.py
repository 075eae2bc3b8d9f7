from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = [
    "pytester",
    "soundsentry.testing.pytest_kafka",
    "tests.aws_fixtures",
    "tests.http_fixtures",
    "tests.mqtt_fixtures",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
