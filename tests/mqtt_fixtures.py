"""A real Mosquitto broker on 127.0.0.1 for the MQTT notification tests (Debian's package;
`make test` installs it)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[int]:
    """The port of a fresh Mosquitto broker (anonymous, loopback only)."""
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed (make test installs Debian's package)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    log = (tmp_path / "mosquitto.log").open("wb")
    process = subprocess.Popen([MOSQUITTO, "-c", str(config)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "mosquitto did not start: " + (tmp_path / "mosquitto.log").read_text()
                    ) from None
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(10)
