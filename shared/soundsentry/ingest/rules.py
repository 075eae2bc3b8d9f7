"""Ingest rules, free of gRPC and Kafka: who may send audio for which sensor, and which chunks
are published.

Every chunk gets exactly one answer (:class:`Verdict`): publish it, or reject it with a
``google.rpc.Code`` and a reason that names the problem. A rejection never ends the stream.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from soundsentry.audio.pcm import ChunkError, ChunkLimits, decode_pcm, validate_chunk
from soundsentry.contracts import SEQUENCE_REWIND_LIMIT, AudioChunk, SampleFormat
from soundsentry.exceptions import ConfigurationError
from soundsentry.ratelimit import TokenBucket

__all__ = ["AudioRateLimiter", "Code", "SequenceTracker", "TokenTable", "Verdict", "admit"]


class Code(IntEnum):
    """The google.rpc.Code values a ChunkAck carries."""

    OK = 0
    INVALID_ARGUMENT = 3
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    UNAVAILABLE = 14
    UNAUTHENTICATED = 16


@dataclass(frozen=True, slots=True)
class Verdict:
    code: Code
    reason: str = ""
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.code is Code.OK


PUBLISH = Verdict(Code.OK)
_NO_DIGEST = bytes(32)  # compared against for an unknown sensor, so both cost the same


class TokenTable:
    """Bearer tokens per sensor: ``{"<sensor id or glob>": "<token>" | "sha256:<hex>"}``.

    A pattern such as ``"site-12/*"`` gives one token to a gateway for all its microphones.
    Store ``sha256:`` digests in configuration so the file does not reveal the tokens. The most
    specific pattern (an exact id first, then the longest pattern) decides.
    """

    def __init__(self, entries: Mapping[str, str]) -> None:
        self._exact: dict[str, bytes] = {}
        self._patterns: list[tuple[str, bytes]] = []
        for pattern, secret in entries.items():
            if not pattern or not secret:
                raise ConfigurationError("token entries need a sensor pattern and a token")
            digest = (
                bytes.fromhex(secret.removeprefix("sha256:"))
                if secret.startswith("sha256:")
                else hashlib.sha256(secret.encode()).digest()
            )
            if len(digest) != 32:
                raise ConfigurationError(f"token for {pattern!r}: sha256 digest must be 64 hex")
            if any(ch in pattern for ch in "*?["):
                self._patterns.append((pattern, digest))
            else:
                self._exact[pattern] = digest
        self._patterns.sort(key=lambda entry: -len(entry[0]))

    @classmethod
    def from_file(cls, path: str | Path) -> TokenTable:
        try:
            entries = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigurationError(f"cannot read the token file {path}: {exc}") from exc
        if not isinstance(entries, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in entries.items()
        ):
            raise ConfigurationError(f"{path}: expected a JSON object of sensor -> token")
        return cls(entries)

    def __len__(self) -> int:
        return len(self._exact) + len(self._patterns)

    def check(self, sensor_id: str, token: str | None) -> Verdict:
        expected = self._exact.get(sensor_id)
        if expected is None:
            expected = next(
                (d for p, d in self._patterns if fnmatch.fnmatchcase(sensor_id, p)), None
            )
        if not token:
            return Verdict(
                Code.UNAUTHENTICATED,
                "missing_token",
                "no bearer token: send metadata 'authorization: Bearer <token>'",
            )
        # An unknown sensor gets the same answer as a wrong token (and the same work, a
        # digest compared), so a caller cannot find out which sensor ids exist.
        given = hashlib.sha256(token.encode()).digest()
        valid = hmac.compare_digest(given, _NO_DIGEST if expected is None else expected)
        if expected is None or not valid:
            return Verdict(
                Code.UNAUTHENTICATED,
                "bad_token",
                "the token is not valid for this sensor (or the sensor is not registered)",
            )
        return PUBLISH


class SequenceTracker:
    """The next expected sequence of each recently seen stream, to refuse repeats.

    Bounded (least recently used streams are forgotten): after a restart of the ingest service
    or a move to another replica, a sensor's first chunk is simply accepted; the featurizer
    drops any duplicate that slips through.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._next: OrderedDict[tuple[str, str], int] = OrderedDict()

    def check(self, chunk: AudioChunk) -> Verdict:
        key = (chunk.sensor_id, chunk.stream_id)
        expected = self._next.get(key)
        if expected is not None and expected - SEQUENCE_REWIND_LIMIT <= chunk.sequence < expected:
            return Verdict(
                Code.ALREADY_EXISTS,
                "stale_sequence",
                f"sequence {chunk.sequence} of stream {chunk.stream_id!r} was already "
                f"received (next expected: {expected}); not published again",
            )
        return PUBLISH

    def forget(self, chunk: AudioChunk) -> None:
        """Forget a stream whose chunk could not be stored, so its resend is accepted."""
        self._next.pop((chunk.sensor_id, chunk.stream_id), None)

    def accepted(self, chunk: AudioChunk) -> bool:
        """Record a published chunk; True if sequences were skipped (lost chunks)."""
        key = (chunk.sensor_id, chunk.stream_id)
        expected = self._next.get(key)
        self._next[key] = chunk.sequence + 1
        self._next.move_to_end(key)
        if len(self._next) > self.capacity:
            self._next.popitem(last=False)
        return expected is not None and chunk.sequence > expected


class AudioRateLimiter:
    """How much audio each sensor may send: ``factor`` times real time, with bursts of
    ``burst_s`` seconds of audio (a backlog after an outage). Beyond it a sensor is slowed
    down, never refused: :meth:`delay` says how long to wait before publishing a chunk, and the
    stream's reader waits, so gRPC flow control holds the sender back and no audio is lost.

    Bounded: the least recently heard sensors are forgotten beyond ``capacity``.
    """

    def __init__(
        self,
        factor: float,
        burst_s: float,
        clock: Callable[[], float],
        capacity: int = 100_000,
    ) -> None:
        if factor <= 0 or burst_s <= 0:
            raise ConfigurationError("audio rate: factor and burst_s must be positive")
        self.factor = factor
        self.burst_s = burst_s
        self.clock = clock
        self.capacity = capacity
        # Per sensor, seconds of audio as tokens; least recently heard first.
        self._budget: OrderedDict[str, TokenBucket] = OrderedDict()

    def delay(self, sensor_id: str, audio_s: float) -> float:
        """Charge ``audio_s`` seconds of audio to the sensor; the seconds to wait before
        publishing it (0.0 within the rate)."""
        now = self.clock()
        bucket = self._budget.pop(sensor_id, None) or TokenBucket(self.burst_s, self.factor, now)
        self._budget[sensor_id] = bucket
        if len(self._budget) > self.capacity:
            self._budget.popitem(last=False)
        return bucket.reserve(audio_s, now)


def admit(
    chunk: AudioChunk,
    *,
    token: str | None,
    tokens: TokenTable | None,
    tracker: SequenceTracker,
    limits: ChunkLimits,
) -> Verdict:
    """Decide whether a chunk is published. ``tokens=None`` means anonymous access is allowed.

    Authentication comes first: a caller without a valid token learns nothing about the
    rules its audio would have to meet."""
    if tokens is not None:
        verdict = tokens.check(chunk.sensor_id, token)
        if not verdict.ok:
            return verdict
    try:
        validate_chunk(chunk, limits)
        if chunk.sample_format == SampleFormat.SAMPLE_FORMAT_F32LE:
            decode_pcm(chunk.pcm, sample_format=chunk.sample_format, channels=chunk.channels)
    except ChunkError as error:
        return Verdict(Code.INVALID_ARGUMENT, error.reason, str(error))
    return tracker.check(chunk)
