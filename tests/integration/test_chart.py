"""The Helm chart (charts/voxrouter) and its Grafana dashboard.

Always: values.yaml against values.schema.json (and bad values rejected), the dashboard's
PromQL only names metrics the gateway exports (dashboards/metrics.txt), and a static scan of
the templates (balanced actions, `.Values` paths that exist, includes that are defined).
With `helm` on PATH: `helm lint` and `helm template` over several values variants, each rendered
object checked (and validated against the Kubernetes API schemas when kubernetes-validate is
importable). Without them those tests skip and say which tool is missing.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "voxrouter"
TEMPLATES = CHART / "templates"
DASHBOARD = CHART / "dashboards" / "voxrouter.json"
METRICS_TXT = CHART / "dashboards" / "metrics.txt"
KUBE_VERSION = "1.30.0"  # the API schemas rendered objects are validated against
RELEASE, NAMESPACE = "vr", "voxrouter"

HELM = shutil.which("helm")
needs_helm = pytest.mark.skipif(HELM is None, reason="`helm` is not on PATH: helm lint / helm template steps skipped")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def merge(base: Any, override: Any) -> Any:
    """Helm's coalescing of a values file onto the chart's: maps merge, null deletes, the rest replaces."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return copy.deepcopy(override)
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return load_yaml(CHART / "values.yaml")


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    return jsonschema.Draft7Validator(schema)


def errors_of(validator: jsonschema.Draft7Validator, values: dict[str, Any]) -> list[str]:
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}" for error in validator.iter_errors(values)
    ]


# --- Values variants (good) and bad values files ---------------------------------------------

EXTERNAL = {
    "postgresql": {"bundled": False, "external": {"url": "postgresql://vox:pw@db.example.internal:5432/vox"}},
    "redis": {"bundled": False, "external": {"existingSecret": "voxrouter-redis", "existingSecretKey": "url"}},
    "providerKeys": {"existingSecret": "voxrouter-providers"},
    "stripe": {"existingSecret": "voxrouter-stripe"},
}
ENGINE = {
    "engine": {
        "enabled": True,
        "names": ["chatterbox", "moss-tts-nano"],
        "token": {"existingSecret": "voxrouter-engine-token", "key": "token"},
        "gpu": {"count": 2},
        "nodeSelector": {"nvidia.com/gpu.present": "true"},
        "runtimeClassName": "nvidia",
    }
}
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "external": EXTERNAL,
    "engine": ENGINE,
    "engine-existing-claim": {
        "engine": {
            "enabled": True,
            "names": ["kokoro"],
            "replicas": 3,
            "gpu": {"count": 0},
            "models": {"existingClaim": "tts-weights"},
        }
    },
    "observability": {
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}, "interval": "15s"}},
        "dashboards": {"enabled": True, "annotations": {"grafana_folder": "VoxRouter"}},
        "image": {"tag": 1.5},  # a number where a string is usual: still a valid image reference
    },
    "hpa": {"autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 12, "targetMemoryUtilizationPercentage": 80}},
    "single-no-redis": {
        "gateway": {"replicas": 1},
        "redis": {"bundled": False},
        "postgresql": {"persistence": {"enabled": False}},
    },
    "everything": merge(
        merge(EXTERNAL, ENGINE),
        {
            "autoscaling": {"enabled": True},
            "metrics": {"serviceMonitor": {"enabled": True}},
            "dashboards": {"enabled": True},
            "service": {"type": "NodePort", "nodePort": 30080},
            "imagePullSecrets": [{"name": "regcred"}],
            "gateway": {"env": {"OPENAI_BASE_URL": "http://openai-proxy:8080/v1"}, "podAnnotations": {"a": "b"}},
            "commonLabels": {"team": "voice"},
        },
    ),
}

BAD_VALUES: dict[str, tuple[str, str]] = {
    # name: (values file, a fragment of the schema error)
    "negative-replicas": ("gateway:\n  replicas: -1\n", "gateway.replicas"),
    "zero-replicas": ("gateway:\n  replicas: 0\n", "gateway.replicas"),
    "replicas-as-string": ("gateway:\n  replicas: '3'\n", "gateway.replicas"),
    "unknown-top-level-key": ("gatway:\n  replicas: 3\n", "gatway"),
    "unknown-gateway-key": ("gateway:\n  replica: 3\n", "replica"),
    "port-70000": ("gateway:\n  port: 70000\n", "gateway.port"),
    "service-port-0": ("service:\n  port: 0\n", "service.port"),
    "engine-port-70000": ("engine:\n  port: 70000\n", "engine.port"),
    "gpu-count-string": ("engine:\n  gpu:\n    count: two\n", "engine.gpu.count"),
    "gpu-count-negative": ("engine:\n  gpu:\n    count: -1\n", "engine.gpu.count"),
    "missing-image-repository": ("image:\n  repository: null\n", "repository"),
    "empty-image-repository": ("image:\n  repository: ''\n", "image.repository"),
    "bad-memory-quantity": ("gateway:\n  resources:\n    limits:\n      memory: 2 gigs\n", "gateway.resources.limits.memory"),
    "unknown-resources-key": ("gateway:\n  resources:\n    limit:\n      cpu: '1'\n", "limit"),
    "bad-service-type": ("service:\n  type: Ingress\n", "service.type"),
    "cpu-target-0": ("autoscaling:\n  targetCPUUtilizationPercentage: 0\n", "autoscaling.targetCPUUtilizationPercentage"),
    "probe-path-relative": ("gateway:\n  probes:\n    readiness:\n      path: readyz\n", "gateway.probes.readiness.path"),
    "no-engine-names": ("engine:\n  names: []\n", "engine.names"),
    "bad-log-level": ("gateway:\n  logLevel: loud\n", "gateway.logLevel"),
    "bad-pull-policy": ("image:\n  pullPolicy: Sometimes\n", "image.pullPolicy"),
    "config-without-providers": ("config:\n  providers: null\n", "providers"),
    "bundled-not-boolean": ("redis:\n  bundled: 'yes'\n", "redis.bundled"),
    "password-not-url-safe": ("postgresql:\n  auth:\n    password: 'p@ss/word'\n", "postgresql.auth.password"),
}

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


def test_values_yaml_validates_against_the_schema(values: dict[str, Any], validator: jsonschema.Draft7Validator) -> None:
    assert errors_of(validator, values) == []


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_values_validate(name: str, values: dict[str, Any], validator: jsonschema.Draft7Validator) -> None:
    assert errors_of(validator, merge(values, VARIANTS[name])) == []


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_bad_values_are_rejected_by_the_schema(name: str, values: dict[str, Any], validator: jsonschema.Draft7Validator) -> None:
    text, fragment = BAD_VALUES[name]
    errors = errors_of(validator, merge(values, yaml.safe_load(text)))
    assert errors, f"{name}: the schema accepted {text!r}"
    assert any(fragment in error for error in errors), errors


def test_schema_closes_the_important_levels(validator: jsonschema.Draft7Validator) -> None:
    schema = validator.schema
    assert schema["additionalProperties"] is False
    for key in (
        "gateway",
        "service",
        "autoscaling",
        "providerKeys",
        "stripe",
        "postgresql",
        "redis",
        "engine",
        "metrics",
        "dashboards",
        "networkPolicy",
    ):
        assert schema["properties"][key]["additionalProperties"] is False, key
    for key in ("image", "resources", "probe", "probes", "externalUrl", "persistentVolume"):
        assert schema["definitions"][key]["additionalProperties"] is False, key


def test_values_config_is_a_valid_gateway_config(values: dict[str, Any]) -> None:
    """`.Values.config` replaces config/default.yaml as a whole: the gateway must accept it."""
    from voxrouter.router.config import Config

    config = Config.model_validate(values["config"])
    assert "local" in config.providers


# --- The dashboard ---------------------------------------------------------------------------

PROMQL_KEYWORDS = frozenset(
    "and or unless by without on ignoring group_left group_right offset bool inf nan atan2 start end".split()
)
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects, without a parser: drop strings, label matchers,
    ranges, grouping clauses and Grafana variables, then keep identifiers that are not calls or keywords."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    assert "__name__" not in text, f"select metrics by name, not by __name__ matcher: {expr}"
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", text)
    text = re.sub(r"\$\{[^}]*\}|\$\w+", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if not call and word.lower() not in PROMQL_KEYWORDS:
            names.add(word)
    return names


def family(metric: str) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        if metric.endswith(suffix):
            return metric[: -len(suffix)]
    return metric


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def exported() -> list[str]:
    return METRICS_TXT.read_text(encoding="utf-8").splitlines()


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # a collapsed row keeps its panels inside it
    return panels


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = [target["expr"] for panel in all_panels(dashboard) for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            match = re.fullmatch(r"\s*(?:label_values|query_result)\((.*?)(?:,\s*\w+)?\)\s*", query)
            assert match, f"variable {variable['name']}: unexpected query {query!r}"
            exprs.append(match.group(1))
    return exprs


def test_metrics_txt_is_one_metric_family_per_line(exported: list[str]) -> None:
    assert exported, "metrics.txt is empty"
    assert len(exported) == len(set(exported)), "duplicate names"
    for name in exported:
        assert re.fullmatch(r"voxrouter_[a-z0-9_]+", name), f"not a metric family name: {name!r}"
        assert not name.endswith(HISTOGRAM_SUFFIXES), f"{name}: list the histogram's family, not a series suffix"


def test_dashboard_shape(dashboard: dict[str, Any]) -> None:
    assert dashboard["title"] and dashboard["uid"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    datasource = [v for v in dashboard["templating"]["list"] if v["name"] == "datasource"]
    assert datasource and datasource[0]["type"] == "datasource" and datasource[0]["query"] == "prometheus"

    panels = all_panels(dashboard)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    for panel in panels:
        x, w = panel["gridPos"]["x"], panel["gridPos"]["w"]
        assert 0 <= x and x + w <= 24, panel["title"]
        if panel["type"] == "row":  # a row is a heading: it queries nothing
            continue
        assert panel.get("targets"), f"panel {panel['id']} ({panel['title']}) has no target"
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), f"panel {panel['title']}: empty expr"
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert target["datasource"]["type"] == "prometheus", panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_every_dashboard_metric_is_exported(dashboard: dict[str, Any], exported: list[str]) -> None:
    used = {family(name) for expr in dashboard_exprs(dashboard) for name in promql_metric_names(expr)}
    assert used, "no metric found in the dashboard's expressions"
    assert sorted(used - set(exported)) == [], "the dashboard queries metrics the gateway does not export (metrics.txt)"


def test_dashboard_shows_every_exported_metric(dashboard: dict[str, Any], exported: list[str]) -> None:
    used = {family(name) for expr in dashboard_exprs(dashboard) for name in promql_metric_names(expr)}
    assert sorted(set(exported) - used) == [], "exported metrics no panel shows"


def test_dashboard_panels_asked_for(dashboard: dict[str, Any]) -> None:
    exprs = " ".join(dashboard_exprs(dashboard))
    for quantile in ("0.5", "0.95", "0.99"):
        assert re.search(
            rf"histogram_quantile\({quantile}, sum by \(provider, le\) \(rate\(voxrouter_ttfb_seconds_bucket", exprs
        ), quantile
    assert "increase(voxrouter_cost_micros_total" in exprs and "/ 1e6" in exprs
    assert 'code!=""' in exprs
    for gauge in ("voxrouter_breaker_state", "voxrouter_engine_queue_depth", "voxrouter_engine_busy_workers"):
        assert gauge in exprs


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (provider) (rate(voxrouter_requests_total{code!="", job=~"$job"}[$__rate_interval]))',
            {"voxrouter_requests_total"},
        ),
        ("histogram_quantile(0.99, sum by (le) (rate(a_bucket[5m]))) / 1e6", {"a_bucket"}),
        ("count(max by (circuit) (b{x='y'}) == 2) or vector(0)", {"b"}),
        ("sum(rate(c[1h])) by (provider) / on(provider) group_left d", {"c", "d"}),
        ("up", {"up"}),
    ],
)
def test_promql_metric_names(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names


def test_dashboard_promql_parses() -> None:
    """Every expression is valid PromQL, and the parser finds the same metrics as the scan above."""
    promql_parser = pytest.importorskip("promql_parser", reason="promql-parser is not installed: PromQL syntax check skipped")
    if not hasattr(promql_parser, "walk"):
        pytest.skip("promql-parser is older than 0.12 (no walk()): PromQL syntax check skipped")
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    grafana_vars = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "30s"}
    for expr in dashboard_exprs(dashboard):
        text = expr
        for var, value in grafana_vars.items():
            text = text.replace(var, value)
        text = re.sub(r"\$\w+", ".*", text)
        tree = promql_parser.parse(text)
        found: set[str] = set()

        def visit(node: Any) -> None:
            if isinstance(node, promql_parser.VectorSelector):
                found.add(node.name)

        promql_parser.walk(tree, visit)
        assert found == promql_metric_names(expr), expr


# --- Templates, statically (no helm needed) ------------------------------------------------------

ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.S)
OPENERS = ("if", "range", "with", "define", "block")


def template_files() -> list[Path]:
    files = sorted(p for p in TEMPLATES.iterdir() if p.suffix in (".yaml", ".tpl", ".txt"))
    assert files
    return files


@pytest.mark.parametrize("path", template_files(), ids=lambda p: p.name)
def test_template_actions_balance(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count("{{") == text.count("}}"), f"{path.name}: unbalanced {{{{ }}}}"
    depth, pos = [], 0
    for match in ACTION.finditer(text):
        between = text[pos : match.start()]
        assert "}}" not in between, f"{path.name}: '}}}}' without '{{{{' before offset {match.start()}"
        pos = match.end()
        body = match.group(1)
        if body.startswith("/*"):
            assert body.endswith("*/"), f"{path.name}: unterminated comment"
            continue
        keyword = body.split(None, 1)[0] if body else ""
        if keyword in OPENERS:
            depth.append((keyword, text.count("\n", 0, match.start()) + 1))
        elif keyword == "end":
            assert depth, f"{path.name}:{text.count(chr(10), 0, match.start()) + 1}: `end` with nothing open"
            depth.pop()
        elif keyword == "else":
            assert depth and depth[-1][0] in ("if", "with", "range"), f"{path.name}: stray else"
    assert "{{" not in text[pos:], f"{path.name}: '{{{{' never closed"
    assert not depth, f"{path.name}: unclosed {depth}"


def values_paths(text: str) -> set[str]:
    """Paths under .Values a template reads, through `$x := .Values.a` aliases too."""
    paths = set(re.findall(r"(?<![\w$])\$?\.Values((?:\.[A-Za-z_]\w*)+)", text))
    aliases = dict(re.findall(r"\$(\w+)\s*:?=\s*\$?\.Values((?:\.[A-Za-z_]\w*)*)\b(?!\s*\|)", text))
    for alias, base in aliases.items():
        for rest in re.findall(rf"\${alias}((?:\.[A-Za-z_]\w*)+)", text):
            paths.add(base + rest)
    return {path.lstrip(".") for path in paths}


def test_template_values_paths_exist(values: dict[str, Any]) -> None:
    missing = []
    seen = 0
    for path in template_files():
        for dotted in sorted(values_paths(path.read_text(encoding="utf-8"))):
            seen += 1
            node: Any = values
            for part in dotted.split("."):
                if not isinstance(node, dict) or part not in node:
                    missing.append(f"{path.name}: .Values.{dotted}")
                    break
                node = node[part]
    assert seen > 50, "the scan found too few .Values references to be working"
    assert missing == [], "templates read values that values.yaml does not have"


def test_template_includes_are_defined() -> None:
    texts = {path.name: path.read_text(encoding="utf-8") for path in template_files()}
    defined = {name for text in texts.values() for name in re.findall(r'\{\{-?\s*define\s+"([^"]+)"', text)}
    for name, text in texts.items():
        for used in re.findall(r'(?:include|template)\s+"([^"]+)"', text):
            assert used in defined, f"{name}: include of undefined template {used!r}"
        for file in re.findall(r'\.Files\.Get\s+"([^"]+)"', text):
            assert (CHART / file).is_file(), f"{name}: .Files.Get {file!r}: no such file in the chart"


def test_chart_metadata() -> None:
    chart = load_yaml(CHART / "Chart.yaml")
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "voxrouter"
    assert str(chart["appVersion"]) == "0.1.0"
    assert re.fullmatch(r"\d+\.\d+\.\d+", str(chart["version"]))


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
