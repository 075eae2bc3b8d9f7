"""The services as separate processes of `soundsentry <service>`, for end-to-end and crash tests."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from soundsentry.dev.stack import SERVICES, LocalStack, StackPorts
from soundsentry.runtime.settings import KafkaSettings
from soundsentry.runtime.topics import TopicLayout

REPO = Path(__file__).resolve().parents[2]
SOUNDSENTRY = str(Path(sys.executable).with_name("soundsentry"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def wait_for_port(port: int) -> None:
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.2)
        else:
            writer.close()
            return


def service_env(
    kafka: KafkaSettings,
    topics: TopicLayout,
    *,
    group: str,
    data_dir: Path,
    ingest_port: int,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment of every service: this test's broker, topics, groups and models, the
    stack's (``soundsentry stack``) with metrics on free ports."""
    stack = LocalStack(
        data_dir,
        model_dir=REPO / "models",
        topics=topics,
        ports=StackPorts(ingest=ingest_port, metrics=dict.fromkeys(SERVICES, 0)),
        group=group,
        extra_env=extra,
        bootstrap=kafka.bootstrap_servers,
    )
    return stack.env()


class Services:
    """Start, kill -9 and restart service processes; their logs go to ``logs``."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.runs: dict[str, int] = {}
        self.restarts: dict[str, int] = {}
        self._killed: set[str] = set()
        self._supervisor: asyncio.Task[None] | None = None

    async def start(self, name: str) -> None:
        self._killed.discard(name)
        run = self.runs[name] = self.runs.get(name, 0) + 1
        log = (self.logs / f"{name}.{run}.log").open("wb")
        self.processes[name] = await asyncio.create_subprocess_exec(
            SOUNDSENTRY, name, env=self.env, stdout=log, stderr=log, cwd=REPO
        )

    async def kill(self, name: str) -> None:
        """SIGKILL: no shutdown of any kind, as when a node dies."""
        self._killed.add(name)
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        await process.wait()

    def supervise(self) -> None:
        """Restart any service that exits on its own, as Kubernetes would (a service whose
        broker went away crashes on purpose, to restart from its last committed offset)."""

        async def watch() -> None:
            while True:
                for name, process in list(self.processes.items()):
                    if process.returncode is not None and name not in self._killed:
                        self.restarts[name] = self.restarts.get(name, 0) + 1
                        await self.start(name)
                await asyncio.sleep(0.5)

        self._supervisor = asyncio.get_running_loop().create_task(watch())

    async def stop_all(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        for process in self.processes.values():
            if process.returncode is None:
                process.terminate()
        for name, process in self.processes.items():
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
            for run in range(1, self.runs[name] + 1):
                text = (self.logs / f"{name}.{run}.log").read_text(errors="replace")
                # Shown only when the test fails; a rebalance or recovery story needs a few
                # hundred lines (2,500 characters lost the start of a stalled recovery).
                print(f"--- {name} run {run} (exit {process.returncode}) ---\n{text[-20000:]}")

    async def __aenter__(self) -> Services:
        for name in SERVICES:
            await self.start(name)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop_all()


KITCHEN = REPO / "examples" / "audio" / "kitchen_alarms.flac"


async def start_push(
    port: int, *, sensor: str, stream: str, realtime: bool = False
) -> asyncio.subprocess.Process:
    """`soundsentry push` of the project's kitchen recording to ingest on ``port``."""
    args = ["push", str(KITCHEN), "--sensor", sensor, "--stream-id", stream]
    args += ["--target", f"127.0.0.1:{port}", *(["--realtime"] if realtime else [])]
    return await asyncio.create_subprocess_exec(
        SOUNDSENTRY, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )


async def finish_push(push: asyncio.subprocess.Process) -> bytes:
    """Wait for a push; its output, after checking it succeeded."""
    out, err = await push.communicate()
    assert push.returncode == 0, (out + err).decode()
    return out
