"""The Kafka harness itself: a failing test shows the broker's log, and the broker is stopped."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest

from soundsentry.testing.kafka_broker import default_cache_dir


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.kafka
def test_failing_test_shows_broker_log_and_the_broker_stops_afterwards(
    pytester: pytest.Pytester, repo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("SOUNDSENTRY_TEST_KAFKA", "local")
    monkeypatch.setenv(
        "SOUNDSENTRY_KAFKA_CACHE",
        os.environ.get("SOUNDSENTRY_KAFKA_CACHE", str(default_cache_dir())),
    )
    pytester.makeconftest('pytest_plugins = ["soundsentry.testing.pytest_kafka"]')
    pytester.makepyfile(
        test_inner="""
        def test_uses_broker_and_fails(kafka_bootstrap):
            print("BOOTSTRAP=" + kafka_bootstrap)
            assert False, "deliberate failure"

        def test_passes_without_broker():
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    output = result.stdout.str()
    assert "Kafka broker log (last 200 lines)" in output
    assert "Kafka Server started" in output  # the log's own text, not just a heading
    match = re.search(r"BOOTSTRAP=127\.0\.0\.1:(\d+)", output)
    assert match, output
    assert not _accepts(int(match.group(1))), "the broker outlived the test session"


def test_no_broker_is_started_when_no_test_needs_one(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("SOUNDSENTRY_TEST_KAFKA", "local")
    monkeypatch.setenv("SOUNDSENTRY_KAFKA_CACHE", str(pytester.path / "no-cache-here"))
    pytester.makeconftest('pytest_plugins = ["soundsentry.testing.pytest_kafka"]')
    pytester.makepyfile(test_inner="def test_plain():\n    assert 1 + 1 == 2\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert not (pytester.path / "no-cache-here").exists()
