"""The ``soundsentry`` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from soundsentry import __version__
from soundsentry.exceptions import SoundSentryError

logger = logging.getLogger("soundsentry")


def _cmd_topics(args: argparse.Namespace) -> int:
    from soundsentry.settings import KafkaSettings, TopicSettings  # noqa: PLC0415
    from soundsentry.topics import TopicLayout, ensure_topics  # noqa: PLC0415

    layout = TopicLayout.from_settings(TopicSettings())
    if args.action == "list":
        for topic in layout.physical_topics():
            print(f"{topic.name}\tpartitions={topic.partitions}\t{topic.config}")
        return 0
    created = asyncio.run(ensure_topics(KafkaSettings(), layout))
    for name in created:
        print(f"created {name}")
    print(
        f"{len(created)} created, {sum(1 for _ in layout.physical_topics()) - len(created)} existed"
    )
    return 0


def _cmd_kafka_local(args: argparse.Namespace) -> int:
    from soundsentry.testing import kafka_broker  # noqa: PLC0415

    return kafka_broker.main([args.action, "--port", str(args.port)])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="soundsentry",
        description="Detect sounds that matter in audio from many microphones.",
    )
    parser.add_argument("--version", action="version", version=f"soundsentry {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    topics = sub.add_parser(
        "topics",
        help="list or create the Kafka topics (SOUNDSENTRY_KAFKA_*, SOUNDSENTRY_TOPICS_*)",
    )
    topics.add_argument("action", choices=["list", "create"])
    topics.set_defaults(func=_cmd_topics)

    kafka = sub.add_parser(
        "kafka-local", help="fetch (Maven Central) or run a local Kafka broker for development"
    )
    kafka.add_argument("action", choices=["fetch", "run"])
    kafka.add_argument("--port", type=int, default=9092)
    kafka.set_defaults(func=_cmd_kafka_local)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        code: int = args.func(args)
    except SoundSentryError as exc:
        logger.error("%s", exc)  # noqa: TRY400 - a clear message, not a traceback, for users
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
