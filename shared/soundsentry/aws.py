"""boto3 clients as SoundSentry uses them: its own retries, short socket timeouts."""

from __future__ import annotations

from typing import Any

__all__ = ["aws_client"]


def aws_client(
    service: str, *, region: str | None, endpoint_url: str | None, timeout_s: float
) -> Any:
    """A boto3 client with botocore's own retries off (the caller retries with backoff and a
    circuit breaker or dead letters) and connect/read timeouts of ``timeout_s``, so a hung
    connection frees its worker thread. Credentials come from boto3's usual chain."""
    import boto3  # noqa: PLC0415 - only deployments that use AWS need it
    from botocore.config import Config  # noqa: PLC0415

    return boto3.client(
        service,
        region_name=region,
        endpoint_url=endpoint_url,
        config=Config(
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            retries={"total_max_attempts": 1, "mode": "standard"},
        ),
    )
