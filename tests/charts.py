"""The Helm chart's files (charts/voxrouter) and the values variants its tests share: the static
checks in tests/unit/test_chart.py, helm lint / helm template in tests/integration/test_chart.py."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "voxrouter"
TEMPLATES = CHART / "templates"
DASHBOARD = CHART / "dashboards" / "voxrouter.json"
METRICS_TXT = CHART / "dashboards" / "metrics.txt"


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


def load_values() -> dict[str, Any]:
    return load_yaml(CHART / "values.yaml")


def load_validator() -> jsonschema.Draft7Validator:
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    return jsonschema.Draft7Validator(schema)


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


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
