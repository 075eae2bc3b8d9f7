"""The Kubernetes manifests (deploy/k8s): each overlay rendered by a real kustomize, validated
against the Kubernetes OpenAPI schemas and the operators' custom resources, and held to the
deployment's rules (hardened pods, budgets, scraping, scaling bounds, topics as in the code).

Offline: kustomize is built by ``tools/fetch_kustomize.sh`` into ``.cache/bin`` (or given as
$KUSTOMIZE); without it these tests are skipped.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped, unused-ignore]  # types-PyYAML is optional

from soundsentry.runtime.topics import AUDIO, SCORES, WINDOWS, TopicLayout, TopicSpec
from soundsentry.services.alerter.settings import AlerterSettings
from soundsentry.services.catalog import environment_variables
from soundsentry.services.classifier.settings import ClassifierSettings
from soundsentry.services.featurizer.settings import FeaturizerSettings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
ALERT_RULES = REPO / "deploy" / "prometheus" / "rules" / "soundsentry-alerts.yml"
SCHEMAS = REPO / "tests" / "k8s_schemas"
# The oldest Kubernetes the manifests are for (native gRPC probes and matchLabelKeys are older).
KUBERNETES_VERSION = "1.30"

Obj = dict[str, Any]


@dataclass(frozen=True)
class Sizing:
    """What an overlay is meant to deploy."""

    partitions: int
    replicas: int  # of every topic
    min_insync: int | None  # topic-level min.insync.replicas, when set
    brokers: int
    controllers: int


SIZING = {
    "dev": Sizing(partitions=3, replicas=1, min_insync=None, brokers=1, controllers=1),
    "city-scale": Sizing(partitions=48, replicas=3, min_insync=2, brokers=3, controllers=3),
}
OVERLAYS = tuple(SIZING)

# Kinds that come from operators, each checked against tests/k8s_schemas/<kind>.json.
CUSTOM_KINDS = {
    "Kafka",
    "KafkaNodePool",
    "KafkaTopic",
    "ScaledObject",
    "ServiceMonitor",
    "PrometheusRule",
}
# The topic each stream worker consumes (its consumer group's lag drives its scaling).
CONSUMES: dict[str, TopicSpec[Any]] = {
    "featurizer": AUDIO,
    "classifier": WINDOWS,
    "alerter": SCORES,
}
APP_ID_DEFAULTS = {
    "featurizer": FeaturizerSettings.model_fields["app_id"].default,
    "classifier": ClassifierSettings.model_fields["app_id"].default,
    "alerter": AlerterSettings.model_fields["app_id"].default,
}
SERVICES = ("ingest", "featurizer", "classifier", "alerter")


def _kustomize() -> Path | None:
    given = os.environ.get("KUSTOMIZE")
    if given:
        return Path(given)
    built = REPO / ".cache" / "bin" / "kustomize"
    if built.exists():
        return built
    found = shutil.which("kustomize")
    return Path(found) if found else None


@functools.cache
def render(overlay: str) -> tuple[Obj, ...]:
    binary = _kustomize()
    if binary is None:
        pytest.skip("no kustomize: run tools/fetch_kustomize.sh (needs Go) or set $KUSTOMIZE")
    result = subprocess.run(
        [str(binary), "build", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def of_kind(objects: tuple[Obj, ...], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: tuple[Obj, ...], kind: str, name: str) -> Obj:
    matches = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def service_of(deployment: Obj) -> str:
    name: str = deployment["metadata"]["name"]
    return name.removeprefix("soundsentry-")


def containers(deployment: Obj) -> list[Obj]:
    spec: list[Obj] = deployment["spec"]["template"]["spec"]["containers"]
    return spec


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """Whether a matchLabels-only label selector matches ``labels``."""
    assert set(selector) <= {"matchLabels"}, f"only matchLabels selectors are used: {selector}"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def pod_environment(objects: tuple[Obj, ...], deployment: Obj) -> dict[str, str]:
    """The plain-valued environment of a Deployment's container: its ConfigMaps, then env."""
    (container,) = containers(deployment)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(named(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
    return env


def set_variable_names(objects: tuple[Obj, ...]) -> Iterator[str]:
    """Every environment variable name a manifest sets: ConfigMap keys, env entries."""
    for config_map in of_kind(objects, "ConfigMap"):
        yield from config_map.get("data", {})
    for deployment in of_kind(objects, "Deployment"):
        for container in containers(deployment):
            yield from (var["name"] for var in container.get("env", []))


_UNITS = {"m": 1e-3, "": 1.0, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(value: str | int) -> float:
    match = re.fullmatch(r"([0-9.]+)(m|Ki|Mi|Gi|Ti|)", str(value))
    assert match, f"unexpected quantity {value!r}"
    return float(match[1]) * _UNITS[match[2]]


def topic_name(topic: Obj) -> str:
    name: str = topic["spec"].get("topicName", topic["metadata"]["name"])
    return name


# --- rendering and schemas -------------------------------------------------------------------


def test_each_overlay_renders_every_part(overlay: str) -> None:
    objects = render(overlay)
    counts = {kind: len(of_kind(objects, kind)) for kind in {o["kind"] for o in objects}}
    for kind in ("Deployment", "Service", "PodDisruptionBudget", "ServiceMonitor"):
        assert counts[kind] == 4, kind
    assert counts["ScaledObject"] == 3
    assert counts["KafkaTopic"] == 8
    assert counts["Kafka"] == 1
    assert counts["PrometheusRule"] == 1
    assert counts["NetworkPolicy"] >= 5
    assert {service_of(d) for d in of_kind(objects, "Deployment")} == set(SERVICES)
    assert "Secret" not in counts, "secrets are created by the operator, never committed"
    assert all(
        o["metadata"].get("namespace") == "soundsentry" for o in objects if o["kind"] != "Namespace"
    )


def test_builtin_objects_match_the_kubernetes_schemas_strictly(overlay: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    objects = render(overlay)
    builtin = [o for o in objects if o["kind"] not in CUSTOM_KINDS]
    assert builtin
    for obj in builtin:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = "/".join(str(p) for p in error.absolute_path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {where}: {error.message}")


def test_strict_validation_rejects_an_unknown_field() -> None:
    # Guards the test above: a misspelt field must fail, not be ignored.
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    deployment = json.loads(json.dumps(named(render("dev"), "Deployment", "soundsentry-ingest")))
    containers(deployment)[0]["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError, match="readOnlyRootFileSystem"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_custom_resources_match_their_operators_schemas(overlay: str) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    objects = render(overlay)
    for obj in (o for o in objects if o["kind"] in CUSTOM_KINDS):
        schema = json.loads((SCHEMAS / f"{obj['kind'].lower()}.json").read_text())
        errors = list(jsonschema.Draft202012Validator(schema).iter_errors(obj))
        assert not errors, f"{obj['kind']}/{obj['metadata']['name']}: " + "; ".join(
            f"{'/'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in errors
        )


def test_custom_resource_schemas_reject_a_missing_required_field() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    scaled = json.loads(json.dumps(of_kind(render("dev"), "ScaledObject")[0]))
    del scaled["spec"]["triggers"][0]["metadata"]["consumerGroup"]
    scaled["spec"]["maxReplicaCount"] = "3"
    schema = json.loads((SCHEMAS / "scaledobject.json").read_text())
    messages = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(scaled)]
    assert any("consumerGroup" in m for m in messages)
    assert any("is not of type 'integer'" in m for m in messages)


def test_prometheus_rule_schema_rejects_a_rule_that_neither_alerts_nor_records() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    rule = json.loads(json.dumps(of_kind(render("dev"), "PrometheusRule")[0]))
    del rule["spec"]["groups"][0]["rules"][0]["alert"]
    schema = json.loads((SCHEMAS / "prometheusrule.json").read_text())
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(rule))
    assert [list(e.absolute_path) for e in errors] == [["spec", "groups", 0, "rules", 0]]


# --- topics and settings ---------------------------------------------------------------------


def test_kafka_topics_are_the_codes_topics_sized_for_the_overlay(overlay: str) -> None:
    sizing = SIZING[overlay]
    layout = TopicLayout(partitions=sizing.partitions, replication_factor=sizing.replicas)
    wanted = {t.name: t for t in layout.physical_topics()}
    topics = {topic_name(t): t for t in of_kind(render(overlay), "KafkaTopic")}
    assert set(topics) == set(wanted)
    for name, physical in wanted.items():
        spec = topics[name]["spec"]
        assert spec["partitions"] == physical.partitions, name
        assert spec["replicas"] == physical.replication_factor, name
        config = {k: str(v) for k, v in spec["config"].items()}
        assert config.pop("retention.ms") == physical.config["retention.ms"], name
        expected_extra = {} if sizing.min_insync is None else {"min.insync.replicas": "2"}
        assert config == expected_extra, name
        assert topics[name]["metadata"]["labels"]["strimzi.io/cluster"] == "soundsentry-kafka"


def test_topic_settings_agree_with_the_kafka_topics(overlay: str) -> None:
    # Faust sizes the alerter's changelog from these settings: they must equal the topics'.
    objects = render(overlay)
    sizing = SIZING[overlay]
    for deployment in of_kind(objects, "Deployment"):
        env = pod_environment(objects, deployment)
        assert int(env["SOUNDSENTRY_TOPICS_PARTITIONS"]) == sizing.partitions
        assert int(env["SOUNDSENTRY_TOPICS_REPLICATION_FACTOR"]) == sizing.replicas
        assert env.get("SOUNDSENTRY_TOPICS_PREFIX", "") == ""  # the KafkaTopics carry no prefix


def test_every_soundsentry_variable_is_one_the_services_read(overlay: str) -> None:
    known = environment_variables()
    names = set(set_variable_names(render(overlay)))
    ours = {n for n in names if n.startswith("SOUNDSENTRY_")}
    assert ours, "the manifests configure the services through SOUNDSENTRY_* variables"
    assert ours <= set(known), f"unknown: {sorted(ours - set(known))}"


def test_each_services_settings_load_from_its_environment(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Values too, not only names: the settings classes validate them as the services would.
    objects = render(overlay)
    known = environment_variables()
    for deployment in of_kind(objects, "Deployment"):
        env = pod_environment(objects, deployment)
        for name in [n for n in os.environ if n.startswith("SOUNDSENTRY_")]:
            monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        for cls in {known[name] for name in env}:
            cls()


# --- pods --------------------------------------------------------------------------------------


def test_every_container_is_hardened_and_bounded(overlay: str) -> None:
    for deployment in of_kind(render(overlay), "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        writable = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for container in containers(deployment):
            where = f"{deployment['metadata']['name']}/{container['name']}"
            security = container["securityContext"]
            assert security["runAsNonRoot"] is True, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"] == {"drop": ["ALL"]}, where
            assert security["seccompProfile"] == {"type": "RuntimeDefault"}, where
            resources = container["resources"]
            for kind in ("cpu", "memory"):
                request, limit = resources["requests"][kind], resources["limits"][kind]
                assert quantity(request) <= quantity(limit), f"{where} {kind}"
            assert {"livenessProbe", "readinessProbe"} <= set(container), where
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts.get("/tmp") in writable, f"{where}: /tmp must be an emptyDir"
            image = container["image"]
            assert re.fullmatch(r"ghcr\.io/soundsentry/soundsentry:\d+\.\d+\.\d+", image), image
            assert container["args"] == [service_of(deployment)], where


def test_ingest_is_probed_over_grpc_and_workers_on_metrics(overlay: str) -> None:
    objects = render(overlay)
    for deployment in of_kind(objects, "Deployment"):
        service = service_of(deployment)
        env = pod_environment(objects, deployment)
        (container,) = containers(deployment)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        metrics_port = int(env[f"SOUNDSENTRY_{service.upper()}_METRICS_PORT"])
        assert ports["metrics"] == metrics_port
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            spec = container[probe]
            if service == "ingest":
                assert spec["grpc"]["port"] == int(env["SOUNDSENTRY_INGEST_PORT"]) == 50051
                assert ports["grpc"] == 50051
            else:
                assert spec["httpGet"] == {"path": "/metrics", "port": "metrics"}


def test_every_deployment_has_a_disruption_budget(overlay: str) -> None:
    objects = render(overlay)
    budgets = of_kind(objects, "PodDisruptionBudget")
    for deployment in of_kind(objects, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [b for b in budgets if selects(b["spec"]["selector"], labels)]
        assert len(covering) == 1, deployment["metadata"]["name"]
        assert covering[0]["spec"].get("maxUnavailable") == 1


def monitored_service(objects: tuple[Obj, ...], monitor: Obj) -> Obj:
    """The one Service a ServiceMonitor selects."""
    services = [
        s
        for s in of_kind(objects, "Service")
        if selects(monitor["spec"]["selector"], s["metadata"]["labels"])
    ]
    assert len(services) == 1, monitor["metadata"]["name"]
    return services[0]


def backing_deployment(objects: tuple[Obj, ...], service: Obj) -> Obj:
    """The one Deployment whose pods a Service selects."""
    backing = [
        d
        for d in of_kind(objects, "Deployment")
        if selects(
            {"matchLabels": service["spec"]["selector"]},
            d["spec"]["template"]["metadata"]["labels"],
        )
    ]
    assert len(backing) == 1, service["metadata"]["name"]
    return backing[0]


def dashboard_jobs() -> tuple[set[str], list[str]]:
    """The job names the dashboards and alert rules are written for: compose's scrape jobs
    (deploy/prometheus/prometheus.yml), and the rules' ``job=~"..."`` matchers."""
    prometheus = REPO / "deploy" / "prometheus"
    config = yaml.safe_load((prometheus / "prometheus.yml").read_text())
    rules = ALERT_RULES.read_text()
    return {job["job_name"] for job in config["scrape_configs"]}, re.findall(
        r'job=~"([^"]+)"', rules
    )


def test_every_service_monitor_scrapes_a_named_metrics_port(overlay: str) -> None:
    objects = render(overlay)
    for monitor in of_kind(objects, "ServiceMonitor"):
        service = monitored_service(objects, monitor)
        for endpoint in monitor["spec"]["endpoints"]:
            port = [p for p in service["spec"]["ports"] if p.get("name") == endpoint["port"]]
            assert port, f"{service['metadata']['name']} has no port {endpoint['port']}"
            # ...and that port reaches a container port of the pods the Service selects.
            backing = backing_deployment(objects, service)
            names = {p["name"] for c in containers(backing) for p in c["ports"]}
            assert port[0]["targetPort"] in names


def test_service_monitors_keep_the_services_labels(overlay: str) -> None:
    # The Operator sets a `service` target label (the Service's name); without honorLabels it
    # renames the services' own `service` label (soundsentry_messages_*_total) to
    # exported_service, and the dashboards' {service="featurizer"} finds nothing.
    for monitor in of_kind(render(overlay), "ServiceMonitor"):
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint.get("honorLabels") is True, monitor["metadata"]["name"]


def test_service_monitors_name_jobs_as_the_dashboards_and_rules_do(overlay: str) -> None:
    objects = render(overlay)
    compose_jobs, rule_matchers = dashboard_jobs()
    assert compose_jobs == set(SERVICES)
    assert rule_matchers, "the rules select the services by job"
    jobs = set()
    for monitor in of_kind(objects, "ServiceMonitor"):
        service = monitored_service(objects, monitor)
        # The Operator's job: the value of the Service's label named by jobLabel, falling
        # back to the Service's name (soundsentry-featurizer) when either is missing.
        job = service["metadata"]["labels"].get(
            monitor["spec"].get("jobLabel", ""), service["metadata"]["name"]
        )
        assert job == service_of(backing_deployment(objects, service)), monitor["metadata"]["name"]
        for matcher in rule_matchers:
            assert re.fullmatch(matcher, job), f"job {job!r} escapes the rules' {matcher!r}"
        jobs.add(job)
    assert jobs == compose_jobs


def test_the_alert_rules_are_deployed_as_compose_loads_them(overlay: str) -> None:
    (rule,) = of_kind(render(overlay), "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(ALERT_RULES.read_text())["groups"]


# --- scaling and sizing -----------------------------------------------------------------------


def test_scaled_objects_follow_lag_within_the_partitions(overlay: str) -> None:
    objects = render(overlay)
    topics = {topic_name(t): t for t in of_kind(objects, "KafkaTopic")}
    scaled = of_kind(objects, "ScaledObject")
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled} == {
        f"soundsentry-{name}" for name in CONSUMES
    }
    for item in scaled:
        deployment = named(objects, "Deployment", item["spec"]["scaleTargetRef"]["name"])
        service = service_of(deployment)
        env = pod_environment(objects, deployment)
        assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
        (trigger,) = item["spec"]["triggers"]
        assert trigger["type"] == "kafka"
        meta = trigger["metadata"]
        app_id = env.get(f"SOUNDSENTRY_{service.upper()}_APP_ID", APP_ID_DEFAULTS[service])
        assert meta["consumerGroup"] == app_id
        assert meta["topic"] == CONSUMES[service].name
        assert meta["bootstrapServers"] == env["SOUNDSENTRY_KAFKA_BOOTSTRAP_SERVERS"]
        low, high = item["spec"]["minReplicaCount"], item["spec"]["maxReplicaCount"]
        assert 1 <= low <= high <= topics[meta["topic"]]["spec"]["partitions"]


def test_overlays_are_sized_as_intended(overlay: str) -> None:
    objects = render(overlay)
    sizing = SIZING[overlay]
    pools = of_kind(objects, "KafkaNodePool")
    brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"])
    controllers = sum(p["spec"]["replicas"] for p in pools if "controller" in p["spec"]["roles"])
    assert (brokers, controllers) == (sizing.brokers, sizing.controllers)
    assert sizing.replicas <= brokers
    config = named(objects, "Kafka", "soundsentry-kafka")["spec"]["kafka"]["config"]
    assert config["default.replication.factor"] == sizing.replicas
    assert config["offsets.topic.replication.factor"] == sizing.replicas
    assert config["min.insync.replicas"] == (sizing.min_insync or 1)
    scaled = of_kind(objects, "ScaledObject")
    ingest = named(objects, "Deployment", "soundsentry-ingest")
    if overlay == "dev":
        assert ingest["spec"]["replicas"] == 1
        assert all(s["spec"]["minReplicaCount"] == 1 for s in scaled)
    else:
        assert ingest["spec"]["replicas"] > 1
        assert all(s["spec"]["minReplicaCount"] > 1 for s in scaled)
        for deployment in of_kind(objects, "Deployment"):
            spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
            keys = {c["topologyKey"] for c in spread}
            assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        assert named(objects, "Kafka", "soundsentry-kafka")["spec"]["kafka"]["rack"]


def test_overlays_differ_in_partitions_as_intended() -> None:
    main = {
        overlay: {
            topic_name(t): t["spec"]["partitions"]
            for t in of_kind(render(overlay), "KafkaTopic")
            if t["metadata"]["labels"]["soundsentry.io/topic"] == "main"
        }
        for overlay in OVERLAYS
    }
    assert set(main["dev"].values()) == {3}
    assert set(main["city-scale"].values()) == {48}


# --- network and secrets ----------------------------------------------------------------------


def _allowed_ports(policies: list[Obj], labels: dict[str, str], direction: str) -> set[int]:
    """The ports the policies of one direction open to pods with ``labels``."""
    rules = [
        rule
        for policy in policies
        if direction.capitalize() in policy["spec"]["policyTypes"]
        and selects(policy["spec"]["podSelector"], labels)
        for rule in policy["spec"].get(direction, [])
    ]
    return {port["port"] for rule in rules for port in rule.get("ports", [])}


def test_network_policies_deny_by_default_and_allow_only_what_is_needed(overlay: str) -> None:
    objects = render(overlay)
    policies = of_kind(objects, "NetworkPolicy")
    deny = named(objects, "NetworkPolicy", "soundsentry-default-deny")["spec"]
    assert "ingress" not in deny
    assert "egress" not in deny
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
    notify = {443, 1883, 8883}
    for deployment in of_kind(objects, "Deployment"):
        name = service_of(deployment)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selects(deny["podSelector"], labels), name
        ingress = _allowed_ports(policies, labels, "ingress")
        egress = _allowed_ports(policies, labels, "egress")
        metrics = int(
            pod_environment(objects, deployment)[f"SOUNDSENTRY_{name.upper()}_METRICS_PORT"]
        )
        assert ingress == ({metrics, 50051} if name == "ingest" else {metrics}), name
        assert egress == ({53, 9092} | (notify if name == "alerter" else set())), name


def test_secrets_are_referenced_by_name_and_documented(overlay: str) -> None:
    referenced: set[str] = set()
    for deployment in of_kind(render(overlay), "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        referenced |= {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        for container in containers(deployment):
            referenced |= {
                s["secretRef"]["name"] for s in container.get("envFrom", []) if "secretRef" in s
            }
            referenced |= {
                v["valueFrom"]["secretKeyRef"]["name"]
                for v in container.get("env", [])
                if "secretKeyRef" in v.get("valueFrom", {})
            }
    assert referenced == {
        "soundsentry-ingest-tokens",
        "soundsentry-notify",
        "soundsentry-notify-env",
        "soundsentry-kafka-sasl",
    }
    guide = (K8S / "README.md").read_text()
    for name in referenced:
        assert f"kubectl -n soundsentry create secret generic {name}" in guide, name
