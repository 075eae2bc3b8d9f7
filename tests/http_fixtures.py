"""A real HTTP receiver on 127.0.0.1 for notification tests (aiohttp's server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web


@dataclass
class Receiver:
    """Records every POST; answers with the next scripted status, then ``status``. With a
    ``hold`` event it answers only once the event is set."""

    statuses: list[int] = field(default_factory=list)
    status: int = 200
    hold: asyncio.Event | None = None
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        if self.hold is not None:
            await self.hold.wait()
        status = self.statuses.pop(0) if self.statuses else self.status
        return web.Response(status=status, text="ok")


@pytest.fixture
async def aiohttp_receiver() -> AsyncIterator[Callable[..., Awaitable[Receiver]]]:
    """``await aiohttp_receiver(**Receiver fields)`` starts one on a free port."""
    runners: list[web.AppRunner] = []

    async def start(**kwargs: Any) -> Receiver:
        receiver = Receiver(**kwargs)
        app = web.Application()
        app.router.add_post("/hook", receiver.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        receiver.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
        runners.append(runner)
        return receiver

    yield start
    for runner in runners:
        await runner.cleanup()
