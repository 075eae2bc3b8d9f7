"""Local AWS endpoints for tests: moto's server mode (a real HTTP server speaking the AWS APIs)
and a misbehaving endpoint, both on 127.0.0.1. Never the real cloud."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

REGION = "eu-west-1"
PROJECT_VERSION_ARN = (
    f"arn:aws:rekognition:{REGION}:123456789012:project/alarms/version/alarms.2026-11-30/1764460800"
)


@pytest.fixture(scope="session")
def aws_credentials() -> Iterator[None]:
    """Fake credentials, so boto3 signs requests without looking for real ones."""
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ["AWS_ACCESS_KEY_ID"] = "testing"
    os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def moto_endpoint(aws_credentials: None) -> Iterator[str]:
    """URL of a moto server on a free loopback port, for the whole session."""
    from moto.server import ThreadedMotoServer  # noqa: PLC0415 - a dev dependency

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


class FailingEndpoint:
    """An HTTP endpoint on loopback that answers every request with ``status``, counting the
    requests it got. It waits ``delay_s`` before answering, or, with ``hold=True``, until
    :meth:`release` (at most a minute)."""

    def __init__(
        self,
        status: int = 500,
        *,
        error: str = "InternalServerError",
        delay_s: float = 0.0,
        hold: bool = False,
    ) -> None:
        self.status = status
        self.error = error
        self.delay_s = delay_s
        self.requests = 0
        self._released = threading.Event()
        if not hold:
            self._released.set()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                endpoint.requests += 1
                time.sleep(endpoint.delay_s)
                endpoint._released.wait(60.0)
                body = b'{"__type": "%s", "message": "test endpoint"}' % endpoint.error.encode()
                try:
                    self.send_response(endpoint.status)
                    self.send_header("Content-Type", "application/x-amz-json-1.1")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up waiting

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Let held requests (and all later ones) be answered."""
        self._released.set()

    def close(self) -> None:
        self._released.set()
        self.server.shutdown()
        self.server.server_close()
