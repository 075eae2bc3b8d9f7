"""The push client's decision to reconnect after a failed stream."""

from __future__ import annotations

import grpc
import pytest
from grpc.aio import AioRpcError, Metadata

from soundsentry.ingest.client import reconnects_for


def _error(code: grpc.StatusCode, debug: str) -> AioRpcError:
    return AioRpcError(code, Metadata(), Metadata(), details="details", debug_error_string=debug)


@pytest.mark.parametrize(
    ("code", "debug", "reconnects"),
    [
        (grpc.StatusCode.UNAVAILABLE, "", True),
        (grpc.StatusCode.CANCELLED, "", True),
        (grpc.StatusCode.UNKNOWN, "", True),
        # What grpc's asyncio client raises for a write to a stream ingest already ended
        # (ingest killed mid-stream, grpc/grpc#36066): seen in the crash test.
        (
            grpc.StatusCode.INTERNAL,
            'Failed "execute_batch": (<grpc._cython.cygrpc.SendMessageOperation object>,)',
            True,
        ),
        (grpc.StatusCode.INTERNAL, "a server error", False),
        (grpc.StatusCode.UNAUTHENTICATED, "", False),
        (grpc.StatusCode.INVALID_ARGUMENT, "", False),
    ],
)
def test_a_push_reconnects_only_when_the_stream_broke(
    code: grpc.StatusCode, debug: str, reconnects: bool
) -> None:
    assert reconnects_for(_error(code, debug)) is reconnects
