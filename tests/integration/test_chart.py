"""The Helm chart (charts/voxrouter) through `helm`: `helm lint` and `helm template` over several
values variants, each rendered object checked (and validated against the Kubernetes API schemas
when kubernetes-validate is importable). Without them those tests skip and say which tool is
missing. The static checks (schema, dashboard, templates) are tests/unit/test_chart.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.charts import BAD_VALUES, CHART, ROOT, VARIANTS, errors_of, load_dashboard, load_validator, load_values, merge

KUBE_VERSION = "1.30.0"  # the API schemas rendered objects are validated against
RELEASE, NAMESPACE = "vr", "voxrouter"

HELM = shutil.which("helm")
needs_helm = pytest.mark.skipif(HELM is None, reason="`helm` is not on PATH: helm lint / helm template steps skipped")


# Values the schema accepts but the templates refuse (checks JSON schema cannot express).
TEMPLATE_FAILURES: dict[str, tuple[dict[str, Any], str]] = {
    "hpa-min-above-max": (
        {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 3}},
        "must not exceed autoscaling.maxReplicas",
    ),
    "both-postgresql": ({"postgresql": {"external": {"url": "postgresql://h/db"}}}, "not both"),
    "no-database": ({"postgresql": {"bundled": False}}, "needs PostgreSQL"),
    "redis-bad-scheme": ({"redis": {"bundled": False, "external": {"url": "http://redis:6379"}}}, "redis://"),
    "engine-rwo-replicas": ({"engine": {"enabled": True, "replicas": 2}}, "ReadWriteOnce"),
}


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return load_values()


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    return load_validator()


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return load_dashboard()


# --- helm lint / helm template ---------------------------------------------------------------


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    result = subprocess.run([HELM, *args], capture_output=True, text=True, timeout=60, cwd=ROOT)
    if check:
        assert result.returncode == 0, f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def values_file(tmp_path: Path, name: str, data: dict[str, Any] | str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def render(tmp_path: Path, name: str, override: dict[str, Any]) -> list[dict[str, Any]]:
    path = values_file(tmp_path, name, override)
    result = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION, "-f", str(path))
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert docs
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def container(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]["containers"][0]


def env_of(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container(doc).get("env", [])}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    if HELM is None:
        pytest.skip("`helm` is not on PATH: helm lint / helm template steps skipped")
    tmp_path = tmp_path_factory.mktemp("values")
    return {name: render(tmp_path, name, override) for name, override in VARIANTS.items()}


@needs_helm
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_helm_lint(name: str, tmp_path: Path) -> None:
    result = helm(
        "lint",
        str(CHART),
        "--strict",
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
        "-f",
        str(values_file(tmp_path, name, VARIANTS[name])),
    )
    assert "0 chart(s) failed" in result.stdout


@needs_helm
@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_helm_rejects_bad_values(name: str, tmp_path: Path) -> None:
    text, _ = BAD_VALUES[name]
    result = helm(
        "template", RELEASE, str(CHART), "--kube-version", KUBE_VERSION, "-f", str(values_file(tmp_path, name, text)), check=False
    )
    assert result.returncode != 0, f"helm rendered {text!r}"
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr


@needs_helm
@pytest.mark.parametrize("name", sorted(TEMPLATE_FAILURES))
def test_helm_template_checks(name: str, tmp_path: Path, values: dict[str, Any], validator: jsonschema.Draft7Validator) -> None:
    override, message = TEMPLATE_FAILURES[name]
    assert errors_of(validator, merge(values, override)) == [], "the schema alone should accept these"
    result = helm(
        "template",
        RELEASE,
        str(CHART),
        "--kube-version",
        KUBE_VERSION,
        "-f",
        str(values_file(tmp_path, name, override)),
        check=False,
    )
    assert result.returncode != 0, f"helm rendered {override}"
    assert message in result.stderr, result.stderr


def test_rendered_default(rendered: dict[str, list[dict[str, Any]]], values: dict[str, Any]) -> None:
    docs = rendered["default"]
    kinds = sorted({doc["kind"] for doc in docs})
    assert kinds == sorted(
        {"ConfigMap", "Deployment", "NetworkPolicy", "PodDisruptionBudget", "Secret", "Service", "ServiceAccount", "StatefulSet"}
    )
    gateway = by_kind(docs, "Deployment")[f"{RELEASE}-voxrouter"]
    assert gateway["spec"]["replicas"] == 2
    main = container(gateway)
    assert main["args"][:5] == ["serve", "--host", "0.0.0.0", "--port", "8080"]
    assert main["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert gateway["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    assert {"/etc/voxrouter", "/tmp", "/var/cache/voxrouter"} <= set(mounts)
    env = env_of(gateway)
    assert env["VOXROUTER_CONFIG"]["value"] == "/etc/voxrouter/config.yaml"
    assert env["VOXROUTER_DATABASE_URL"]["value"] == (
        f"postgresql://voxrouter:$(VOXROUTER_POSTGRES_PASSWORD)@{RELEASE}-voxrouter-postgresql:5432/voxrouter"
    )
    names = list(env)
    assert names.index("VOXROUTER_POSTGRES_PASSWORD") < names.index("VOXROUTER_DATABASE_URL"), "$(VAR) needs VAR first"
    assert env["VOXROUTER_REDIS_URL"]["value"] == f"redis://{RELEASE}-voxrouter-redis:6379/0"
    assert env["VOXROUTER_REDIS_PREFIX"]["value"] == "voxrouter"
    assert not {"OPENAI_API_KEY", "STRIPE_API_KEY", "VOXROUTER_ENGINE_TOKEN"} & set(env)

    config_map = by_kind(docs, "ConfigMap")[f"{RELEASE}-voxrouter-config"]
    assert yaml.safe_load(config_map["data"]["config.yaml"]) == values["config"], (
        "the ConfigMap must carry .Values.config unchanged"
    )
    gateway_pods = gateway["spec"]["selector"]["matchLabels"]
    for component, port in (("postgresql", 5432), ("redis", 6379)):
        policy = by_kind(docs, "NetworkPolicy")[f"{RELEASE}-voxrouter-{component}"]["spec"]
        assert policy["ingress"] == [
            {"from": [{"podSelector": {"matchLabels": gateway_pods}}], "ports": [{"port": port, "protocol": "TCP"}]}
        ]
    postgres = by_kind(docs, "StatefulSet")[f"{RELEASE}-voxrouter-postgresql"]
    assert postgres["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "8Gi"
    assert container(postgres)["image"] == "postgres:16"
    assert container(by_kind(docs, "Deployment")[f"{RELEASE}-voxrouter-redis"])["image"] == "redis:7.4-alpine"


def test_rendered_external(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["external"]
    assert not by_kind(docs, "StatefulSet") and list(by_kind(docs, "Deployment")) == [f"{RELEASE}-voxrouter"]
    assert not by_kind(docs, "NetworkPolicy"), "nothing bundled to guard"
    env = env_of(by_kind(docs, "Deployment")[f"{RELEASE}-voxrouter"])
    assert env["VOXROUTER_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{RELEASE}-voxrouter-urls",
        "key": "database-url",
    }
    assert env["VOXROUTER_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "voxrouter-redis", "key": "url"}
    urls = by_kind(docs, "Secret")[f"{RELEASE}-voxrouter-urls"]
    assert urls["stringData"] == {"database-url": "postgresql://vox:pw@db.example.internal:5432/vox"}
    for var, key in (
        ("OPENAI_API_KEY", "openai-api-key"),
        ("ELEVENLABS_API_KEY", "elevenlabs-api-key"),
        ("CARTESIA_API_KEY", "cartesia-api-key"),
    ):
        assert env[var]["valueFrom"]["secretKeyRef"] == {"name": "voxrouter-providers", "key": key, "optional": True}
    assert env["STRIPE_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "voxrouter-stripe", "key": "api-key"}
    assert env["STRIPE_WEBHOOK_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": "voxrouter-stripe", "key": "webhook-secret"}


def test_rendered_engine(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["engine"]
    engine = by_kind(docs, "Deployment")[f"{RELEASE}-voxrouter-engine"]
    main = container(engine)
    assert main["command"] == ["voxrouter"]
    assert main["args"] == [
        "engine", "serve", "--engine", "chatterbox", "--engine", "moss-tts-nano",
        "--host", "0.0.0.0", "--port", "9000", "--log-level", "info",
    ]  # fmt: skip
    assert main["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert main["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert {m["mountPath"] for m in main["volumeMounts"]} >= {"/models", "/etc/voxrouter", "/tmp"}
    pod = engine["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"} and pod["runtimeClassName"] == "nvidia"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    claim = next(v for v in pod["volumes"] if v["name"] == "models")["persistentVolumeClaim"]["claimName"]
    assert claim in by_kind(docs, "PersistentVolumeClaim")
    token = {"name": "voxrouter-engine-token", "key": "token"}
    assert env_of(engine)["VOXROUTER_ENGINE_TOKEN"]["valueFrom"]["secretKeyRef"] == token
    gateway = by_kind(docs, "Deployment")[f"{RELEASE}-voxrouter"]
    assert env_of(gateway)["VOXROUTER_ENGINE_TOKEN"]["valueFrom"]["secretKeyRef"] == token
    assert by_kind(docs, "Service")[f"{RELEASE}-voxrouter-engine"]["spec"]["ports"][0]["port"] == 9000

    from voxrouter.router.config import Config

    config = yaml.safe_load(by_kind(docs, "ConfigMap")[f"{RELEASE}-voxrouter-config"]["data"]["config.yaml"])
    engines = config["providers"]["local"]["options"]["engines"]
    for name in ("chatterbox", "moss-tts-nano"):
        assert engines[name]["url"] == f"http://{RELEASE}-voxrouter-engine:9000"
        assert engines[name]["token_env"] == "VOXROUTER_ENGINE_TOKEN"
    assert "url" not in engines["kokoro"]
    Config.model_validate(config)

    existing = by_kind(rendered["engine-existing-claim"], "Deployment")[f"{RELEASE}-voxrouter-engine"]
    assert "nvidia.com/gpu" not in container(existing)["resources"].get("limits", {})
    assert not by_kind(rendered["engine-existing-claim"], "PersistentVolumeClaim")
    volumes = existing["spec"]["template"]["spec"]["volumes"]
    assert {"name": "models", "persistentVolumeClaim": {"claimName": "tts-weights", "readOnly": True}} in volumes


def test_rendered_observability(rendered: dict[str, list[dict[str, Any]]], dashboard: dict[str, Any]) -> None:
    docs = rendered["observability"]
    monitor = by_kind(docs, "ServiceMonitor")[f"{RELEASE}-voxrouter"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}]
    service = by_kind(docs, "Service")[f"{RELEASE}-voxrouter"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["name"] == "http"
    dashboards = by_kind(docs, "ConfigMap")[f"{RELEASE}-voxrouter-dashboards"]
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboards["data"]["voxrouter.json"]) == dashboard
    assert not by_kind(rendered["default"], "ServiceMonitor")
    assert container(by_kind(docs, "Deployment")[f"{RELEASE}-voxrouter"])["image"] == "ghcr.io/voxrouter/voxrouter:1.5"


def test_rendered_hpa(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["hpa"]
    hpa = by_kind(docs, "HorizontalPodAutoscaler")[f"{RELEASE}-voxrouter"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{RELEASE}-voxrouter"}
    targets = {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"] for m in hpa["spec"]["metrics"]}
    assert targets == {"cpu": 70, "memory": 80}
    assert "replicas" not in by_kind(docs, "Deployment")[f"{RELEASE}-voxrouter"]["spec"], "the HPA owns the replica count"
    assert not by_kind(rendered["default"], "HorizontalPodAutoscaler")


def test_rendered_single_replica_without_redis(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["single-no-redis"]
    env = env_of(by_kind(docs, "Deployment")[f"{RELEASE}-voxrouter"])
    assert "VOXROUTER_REDIS_URL" not in env and "VOXROUTER_REDIS_PREFIX" not in env
    assert not by_kind(docs, "PodDisruptionBudget"), "a PDB over one replica would block node drains"
    postgres = by_kind(docs, "StatefulSet")[f"{RELEASE}-voxrouter-postgresql"]
    assert "volumeClaimTemplates" not in postgres["spec"]


def test_rendered_objects_are_well_formed(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for variant, docs in rendered.items():
        seen = set()
        for doc in docs:
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in seen, f"{variant}: {key} rendered twice"
            seen.add(key)
            assert len(doc["metadata"]["name"]) <= 63, key
            assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE, key
            spec = doc.get("spec", {})
            if "selector" in spec and "matchLabels" in spec["selector"] and "template" in spec:
                assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items(), key


SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    # The CRD's schema is not in kubernetes-validate: the parts this chart sets.
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "jobLabel": {"type": "string"},
                "namespaceSelector": {
                    "type": "object",
                    "properties": {"matchNames": {"type": "array", "items": {"type": "string"}}},
                },
                "selector": {"type": "object", "properties": {"matchLabels": {"type": "object"}}},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": "^([0-9]+(ms|s|m|h))+$"},
                            "scrapeTimeout": {"type": "string", "pattern": "^([0-9]+(ms|s|m|h))+$"},
                            "relabelings": {"type": "array"},
                            "metricRelabelings": {"type": "array"},
                        },
                    },
                },
            },
        }
    },
}


def test_rendered_objects_validate_against_kubernetes(rendered: dict[str, list[dict[str, Any]]]) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate is not installed: rendered manifests not validated against the API schemas",
    )
    failures = []
    count = 0
    for variant, docs in rendered.items():
        for doc in docs:
            count += 1
            try:
                if doc["apiVersion"] == "monitoring.coreos.com/v1":
                    jsonschema.validate(doc, SERVICE_MONITOR_SCHEMA)
                else:
                    kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
            except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
                failures.append(f"{variant}: {doc['kind']}/{doc['metadata']['name']}: {exc}")
    assert count > 40
    assert failures == []
