"""``soundsentry stack`` stops cleanly on Ctrl-C at any moment: a stack whose broker and
services are fakes (the services real ``sleep`` processes), with SIGINT raised in this process
during one step of the start-up, as Ctrl-C in the terminal would."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import pytest

from soundsentry.dev.stack import SERVICES, LocalStack, StackPorts, run_stack

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


class FakeStack(LocalStack):
    """No Kafka; SIGINT arrives during the step named ``interrupt_at``, which then never
    finishes on its own; ``crash`` makes a service exit as soon as the stack is up."""

    def __init__(self, workdir: Path, *, interrupt_at: str | None, crash: bool = False) -> None:
        super().__init__(workdir, model_dir=workdir)
        self.interrupt_at = interrupt_at
        self.crash = crash
        self.steps: list[str] = []
        self.kafka_stopped = False
        self.tasks_at_stop: set[asyncio.Task[object]] | None = None

    def _interrupts(self, step: str) -> bool:
        self.steps.append(step)
        if step == self.interrupt_at:
            signal.raise_signal(signal.SIGINT)
            return True
        return False

    def start_kafka(self, port: int = 9092) -> str:
        # Blocking, as the real start is: the signal must end it from inside.
        self._interrupts("kafka")
        self.bootstrap = "127.0.0.1:9"
        return self.bootstrap

    def stop_kafka(self) -> None:
        self.kafka_stopped = True

    async def start_services(self, names: Sequence[str] = SERVICES) -> None:
        await self._spawn("ingest", "sleep", "600", env=os.environ)
        if self._interrupts("services"):
            await asyncio.Event().wait()
        await self._spawn("featurizer", "sleep", "600", env=os.environ)

    async def start_simulation(self, sensors: int, duration_s: float, *args: str) -> None:
        raise AssertionError("these tests start no sensors")

    async def print_events(self, out: TextIO) -> None:
        self._interrupts("events")
        await asyncio.Event().wait()

    def exited(self) -> dict[str, int]:
        return {"featurizer": 3} if self.crash else super().exited()

    async def stop(self, timeout_s: float = 30.0) -> None:
        current = asyncio.current_task()
        self.tasks_at_stop = {t for t in asyncio.all_tasks() if t is not current}
        await super().stop(timeout_s)


async def _run(stack: FakeStack) -> int:
    return await run_stack(stack, sensors=0, duration_s=1.0, prometheus=False, remove_workdir=True)


# A guard against a start-up that ignores the signal and waits forever, not a speed limit.
@pytest.mark.timeout(60)
@pytest.mark.parametrize("interrupt_at", ["kafka", "services", "events"])
async def test_ctrl_c_at_any_step_stops_what_started_and_exits_0(
    tmp_path: Path, interrupt_at: str
) -> None:
    stack = FakeStack(tmp_path / "work", interrupt_at=interrupt_at)
    assert await _run(stack) == 0
    assert stack.steps[-1] == interrupt_at, "nothing starts after the interrupt"
    assert stack.kafka_stopped
    assert stack.tasks_at_stop == set(), "the start-up and event printer end before the stop"
    assert all(p.returncode is not None for p in stack.processes.values())
    assert not stack.workdir.exists(), "a temporary workdir goes when the stack stopped cleanly"
    # The signals are the process's own again: Ctrl-C afterwards is an ordinary interrupt.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.timeout(60)
async def test_a_service_that_exits_stops_the_stack_and_keeps_its_logs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = FakeStack(tmp_path / "work", interrupt_at=None, crash=True)
    assert await _run(stack) == 1
    assert stack.kafka_stopped
    assert stack.tasks_at_stop == set(), "the event printer ends before the broker"
    assert all(p.returncode is not None for p in stack.processes.values())
    assert stack.workdir.exists()
    out = capsys.readouterr().out
    assert "featurizer exited with 3" in out
    assert f"logs kept in {stack.workdir}" in out


def test_ports_default_to_free_ones_and_given_ones_are_kept() -> None:
    ports = StackPorts.free(ingest=50999, metrics={"classifier": 9999})
    assert ports.ingest == 50999
    assert ports.metrics["classifier"] == 9999
    chosen = [ports.prometheus, *(p for n, p in ports.metrics.items() if n != "classifier")]
    assert all(port > 0 for port in chosen)
    assert len({ports.ingest, *chosen, 9999}) == 6  # all distinct


class PrometheusDies(FakeStack):
    """Prometheus (a fake) exits at once, as it does on a taken port."""

    async def start_services(self, names: Sequence[str] = SERVICES) -> None:
        await self._spawn("ingest", "sleep", "600", env=os.environ)

    async def print_events(self, out: TextIO) -> None:
        await self._spawn("prometheus", "sh", "-c", "echo 'address already in use'; exit 1")
        await asyncio.Event().wait()

    def exited(self) -> dict[str, int]:
        return LocalStack.exited(self)


@pytest.mark.timeout(60)  # a guard against a hang, not a speed limit
async def test_prometheus_dying_is_a_warning_not_the_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = PrometheusDies(tmp_path / "work", interrupt_at=None)
    task = asyncio.create_task(_run(stack))
    while "warning: Prometheus exited with 1" not in capsys.readouterr().out:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    assert not task.done()  # the stack runs on without it
    signal.raise_signal(signal.SIGINT)
    assert await task == 0
