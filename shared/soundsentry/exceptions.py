"""The library's exceptions: one root, so callers can tell our errors from everything else."""

from __future__ import annotations

from typing import Any


class SoundSentryError(Exception):
    """Root of every error raised by SoundSentry."""


class ConfigurationError(SoundSentryError):
    """Settings or files that cannot work; raised at start-up, never per message."""


class BadMessageError(SoundSentryError):
    """A message that can never be processed: it is counted and parked, never retried.

    ``reason`` is a short, stable, machine-readable code (used as a metric label and a
    dead-letter header); the message text explains the problem to a person.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        # Picklable with both arguments, so that it crosses from a worker process intact.
        return (type(self), (self.reason, str(self)))


class ContractError(BadMessageError):
    """Bytes that are not a valid message of the expected wire type."""
