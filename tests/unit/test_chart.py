"""The Helm chart (charts/voxrouter) and its Grafana dashboard, statically: values.yaml against
values.schema.json (and bad values rejected), the dashboard's PromQL only names metrics the
gateway exports (dashboards/metrics.txt), and a scan of the templates (balanced actions,
`.Values` paths that exist, includes that are defined). `helm lint` and `helm template` are
tests/integration/test_chart.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.charts import (
    BAD_VALUES,
    CHART,
    METRICS_TXT,
    TEMPLATES,
    VARIANTS,
    errors_of,
    load_dashboard,
    load_validator,
    load_values,
    load_yaml,
    merge,
)


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return load_values()


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    return load_validator()


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


def test_values_config_speaks_like_the_default_config(values: dict[str, Any]) -> None:
    """The chart's copy of the local engines and the aliases is config/default.yaml's (it had drifted:
    13 names on one Piper voice while the default had 13 voices)."""
    import yaml

    default = yaml.safe_load((Path(__file__).resolve().parents[2] / "config" / "default.yaml").read_text())
    assert values["config"]["aliases"] == default["aliases"]
    assert values["config"]["providers"]["local"] == default["providers"]["local"]


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
    return load_dashboard()


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
    dashboard = load_dashboard()
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
