"""A real single-node Apache Kafka broker (KRaft) on loopback, from the broker's Maven jars.

For machines without a Docker engine: the jars of ``org.apache.kafka:kafka_2.13`` and their
runtime dependencies are copied from Maven Central into a cache folder once (``fetch_kafka``),
then each :class:`LocalKafka` formats a fresh log directory and starts ``kafka.Kafka`` with a
small heap on two free loopback ports. Needs a JDK (17+) and Maven on the PATH.

Command line (used by ``make kafka``)::

    python -m soundsentry.testing.kafka_broker fetch            # download once into the cache
    python -m soundsentry.testing.kafka_broker run --port 9092  # a broker in the foreground
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import deque
from pathlib import Path
from types import TracebackType

from soundsentry.exceptions import ConfigurationError

__all__ = ["KAFKA_VERSION", "LocalKafka", "default_cache_dir", "fetch_kafka", "free_port"]

logger = logging.getLogger(__name__)

KAFKA_VERSION = "4.2.0"
# Kafka 4.x logs through log4j2 behind slf4j 1.x; the binding is not a dependency of the broker.
_LOG4J_VERSION = "2.25.3"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.soundsentry</groupId>
  <artifactId>local-kafka</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{kafka_version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j_version}</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J2_PROPERTIES = """status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.noisy.name = org.apache.kafka.common.config
logger.noisy.level = WARN
"""

_STARTED_MARKER = "Kafka Server started"


def default_cache_dir() -> Path:
    """``$SOUNDSENTRY_KAFKA_CACHE``, else ``$XDG_CACHE_HOME/soundsentry/kafka`` (~/.cache/...)."""
    explicit = os.environ.get("SOUNDSENTRY_KAFKA_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "soundsentry" / "kafka"


def fetch_kafka(version: str = KAFKA_VERSION, cache_dir: Path | None = None) -> Path:
    """Return the folder holding the broker's jars, fetching them with Maven the first time.

    The folder is complete or absent: jars are copied into a temporary sibling and renamed.
    """
    cache = (cache_dir or default_cache_dir()).resolve()
    libs = cache / version / "libs"
    if (libs / f"kafka_2.13-{version}.jar").is_file():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ConfigurationError(
            "Maven (mvn) is needed to fetch Kafka's jars: apt-get install maven"
        )
    libs.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=libs.parent, prefix=".fetch-") as tmp:
        pom = Path(tmp) / "pom.xml"
        pom.write_text(_POM.format(kafka_version=version, log4j_version=_LOG4J_VERSION))
        staging = Path(tmp) / "libs"
        logger.info("fetching Apache Kafka %s jars from Maven Central into %s", version, libs)
        result = subprocess.run(
            [
                mvn,
                "--batch-mode",
                "--quiet",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={staging}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ConfigurationError(
                f"mvn could not fetch Kafka {version} (exit {result.returncode}):\n"
                f"{result.stdout[-4000:]}{result.stderr[-4000:]}"
            )
        staging.rename(libs)
    return libs


_handed_out: set[int] = set()
_PORT_SPAN = 10_000  # ports below the ephemeral range to choose from


def _ephemeral_low() -> int:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now and was not handed out before.

    Chosen below the kernel's ephemeral range: a port from that range (what binding port 0
    gives) can become the source port of any outgoing connection before the service that was
    given it binds it (a metrics server failed with "Address already in use" that way).
    """
    high = _ephemeral_low()
    low = max(1024, high - _PORT_SPAN)
    chooser = random.SystemRandom()
    for _ in range(1000):
        port = chooser.randrange(low, high)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # all tried: any free one
        sock.bind(("127.0.0.1", 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # PR_SET_PDEATHSIG: the broker gets SIGKILL if the test process dies without cleaning up.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


class LocalKafka:
    """One KRaft broker+controller process on 127.0.0.1, with its own data folder and log.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. ``bootstrap_servers`` is
    valid after ``start``; ``startup_seconds`` says how long the broker took to come up.
    """

    def __init__(
        self,
        *,
        libs: Path,
        workdir: Path,
        port: int | None = None,
        heap_mb: int = 512,
        extra_properties: dict[str, str] | None = None,
    ) -> None:
        self.libs = libs
        self.workdir = workdir
        self.port = port or free_port()
        self.controller_port = free_port()
        self.heap_mb = heap_mb
        self.extra_properties = extra_properties or {}
        self.log_path = workdir / "broker.log"
        self.startup_seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def properties(self) -> dict[str, str]:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.workdir / "data"),
            # Topics are created explicitly (soundsentry topics create); a typo must not
            # silently make a new topic.
            "auto.create.topics.enable": "false",
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "4",
        }
        props.update(self.extra_properties)
        return props

    def _java(self, main_class: str, *args: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise ConfigurationError("a Java runtime (17+) is needed to run Kafka")
        return [
            java,
            f"-Xms{min(256, self.heap_mb)}m",
            f"-Xmx{self.heap_mb}m",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            "-cp",
            f"{self.libs}/*",
            main_class,
            *args,
        ]

    def start(self, *, timeout_s: float = 90.0) -> str:
        """Format a fresh log directory, start the broker and wait until it serves clients."""
        started_at = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "log4j2.properties").write_text(_LOG4J2_PROPERTIES)
        config = self.workdir / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in self.properties().items()))
        cluster_id = _kafka_cluster_id()
        fmt = subprocess.run(
            # "--cluster-id=..." in one word: a random id may begin with "-".
            self._java(
                "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(config)
            ),
            capture_output=True,
            text=True,
            check=False,
            # Out of the terminal's process group, as the broker is: Ctrl-C reaches only its
            # caller, whose interrupt kills it, rather than failing the format with a
            # misleading error.
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        if fmt.returncode != 0:
            raise ConfigurationError(
                f"formatting Kafka's log directory failed:\n{fmt.stdout}{fmt.stderr}"
            )
        self._launch(started_at, timeout_s)
        return self.bootstrap_servers

    def restart(self, *, kill: bool = True, timeout_s: float = 90.0) -> None:
        """Kill (or stop) the broker and start it again on the same ports and data, as after
        a crash or a rolling restart.

        Call it from a thread that lives as long as the broker should (the main thread): the
        broker is killed when the thread that started it ends (PR_SET_PDEATHSIG).
        """
        if kill:
            self.kill()
        else:
            self.stop()
        self._launch(time.monotonic(), timeout_s)

    def _launch(self, started_at: float, timeout_s: float) -> None:
        config = self.workdir / "server.properties"
        # Appended to, so the log of a restarted broker keeps its earlier runs; only what this
        # run writes counts as its start.
        seen = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self._java("kafka.Kafka", str(config)),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only calls prctl
            )
        deadline = started_at + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ConfigurationError(
                    f"Kafka exited with code {self._process.returncode} while starting:\n"
                    + self.log_tail(80)
                )
            with self.log_path.open("rb") as log:
                log.seek(seen)
                fresh = log.read().decode(errors="replace")
            if _STARTED_MARKER in fresh and _accepts(self.port):
                self.startup_seconds = time.monotonic() - started_at
                logger.info(
                    "Kafka %s up on %s in %.1f s",
                    self.libs.parent.name,
                    self.bootstrap_servers,
                    self.startup_seconds,
                )
                return
            time.sleep(0.1)
        self.stop()
        raise ConfigurationError(
            f"Kafka did not start within {timeout_s:.0f} s:\n{self.log_tail(80)}"
        )

    def stop(self, *, timeout_s: float = 20.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL); safe to call more than once."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def kill(self) -> None:
        """Kill the broker at once (SIGKILL), as a crash would."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    @property
    def pid(self) -> int:
        """The broker's process id (for CPU and memory figures).

        Raises
        ------
        ConfigurationError
            when the broker is not running.
        """
        if self._process is None:
            raise ConfigurationError("the broker is not running")
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 200) -> str:
        """The last ``lines`` lines of the broker's log."""
        if not self.log_path.exists():
            return "(no broker log)"
        with self.log_path.open(errors="replace") as log:
            return "".join(deque(log, maxlen=lines))

    def __enter__(self) -> LocalKafka:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _kafka_cluster_id() -> str:
    # A cluster id is 16 random bytes in URL-safe base64 without padding (22 characters).
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fetch or run a local Apache Kafka broker.")
    parser.add_argument("command", choices=["fetch", "run"])
    parser.add_argument("--version", default=KAFKA_VERSION, help="Kafka version (Maven Central)")
    parser.add_argument("--cache", type=Path, default=None, help="jar cache folder")
    parser.add_argument("--port", type=int, default=9092, help="client port on 127.0.0.1 (run)")
    parser.add_argument("--workdir", type=Path, default=None, help="data and log folder (run)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    libs = fetch_kafka(args.version, args.cache)
    if args.command == "fetch":
        print(libs)
        return 0
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="soundsentry-kafka-"))

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM stops as Ctrl-C does, cleaning up

    signal.signal(signal.SIGTERM, stop)
    broker = LocalKafka(libs=libs, workdir=workdir, port=args.port)
    broker.start()
    print(f"Kafka {args.version} serving on {broker.bootstrap_servers} (log: {broker.log_path})")
    failed = False
    try:
        while broker.running:
            time.sleep(1)
        failed = True  # the broker stopped on its own: keep its log
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
        # A temporary folder of data would pile up run after run; a --workdir is the user's.
        if args.workdir is None and not failed:
            shutil.rmtree(workdir, ignore_errors=True)
        elif args.workdir is None:
            print(f"the broker stopped; its log is in {broker.log_path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
