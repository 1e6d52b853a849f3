"""`GET /metrics`, `/healthz` and `/readyz`: what a Prometheus scrape and a Kubernetes probe see."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Emulator, Gateway

DASHBOARD_METRICS = Path(__file__).resolve().parents[2] / "charts" / "voxrouter" / "dashboards" / "metrics.txt"


def _samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(url + "/metrics", timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _speak(gateway: Gateway, key: str, **body: object) -> httpx.Response:
    payload = {"model": "openai/tts-1", "voice": "alloy", "input": "Metrics matter.", **body}
    return httpx.post(gateway.url + "/v1/audio/speech", json=payload, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_a_served_request_shows_in_every_family(gateway: Gateway, api_key: str) -> None:
    before = _samples(gateway.url)
    assert _speak(gateway, api_key).status_code == 200
    after = _samples(gateway.url)
    labels = {"provider": "openai", "model": "openai/tts-1", "status": "200", "code": ""}
    assert _value(after, "voxrouter_requests_total", **labels) == _value(before, "voxrouter_requests_total", **labels) + 1
    for name in ("voxrouter_ttfb_seconds_count", "voxrouter_request_duration_seconds_count"):
        assert _value(after, name, provider="openai") == _value(before, name, provider="openai") + 1
    chars = _value(after, "voxrouter_characters_total", provider="openai") - _value(before, "voxrouter_characters_total", provider="openai")
    assert chars == len("Metrics matter.")
    cost = _value(after, "voxrouter_cost_micros_total", provider="openai") - _value(before, "voxrouter_cost_micros_total", provider="openai")
    assert cost == -(-len("Metrics matter.") * 15_000 // 1000)
    assert ("voxrouter_reservations_in_flight", ()) in after


def test_refusals_and_failures_are_counted_without_key_labels(gateway: Gateway, key_factory, emulators: dict[str, Emulator]) -> None:
    key = key_factory(requests_per_minute=1)
    before = _samples(gateway.url)
    assert _speak(gateway, key).status_code == 200
    assert _speak(gateway, key).status_code == 429
    emulators["openai"].state.behaviour.fail_status = 500
    failed = _speak(gateway, key_factory())
    assert failed.status_code == 502
    after = _samples(gateway.url)
    rejected = _value(after, "voxrouter_limit_rejections_total", reason="rate_limited")
    assert rejected == _value(before, "voxrouter_limit_rejections_total", reason="rate_limited") + 1
    failed_labels = {"provider": "openai", "model": "none", "status": "502", "code": "upstream_error"}
    assert _value(after, "voxrouter_requests_total", **failed_labels) == _value(before, "voxrouter_requests_total", **failed_labels) + 1
    fallbacks = _value(after, "voxrouter_fallback_attempts_total", provider="openai", reason="unavailable")
    assert fallbacks == _value(before, "voxrouter_fallback_attempts_total", provider="openai", reason="unavailable") + 1
    assert not any("key" in name or any(k in ("key", "key_id", "org", "user") for k, _ in labels) for name, labels in after)


def test_local_engines_report_queue_busy_workers_and_rtf(gateway: Gateway, api_key: str) -> None:
    assert _speak(gateway, api_key, model="local/piper", voice="en_US-joe-medium", response_format="pcm").status_code == 200
    after = _samples(gateway.url)
    assert _value(after, "voxrouter_engine_rtf_count", engine="piper") >= 1
    assert ("voxrouter_engine_queue_depth", (("engine", "piper"),)) in after
    assert ("voxrouter_engine_busy_workers", (("engine", "piper"),)) in after
    assert _value(after, "voxrouter_audio_seconds_total", provider="local") > 0


def test_every_metric_the_dashboard_queries_is_exported(gateway: Gateway) -> None:
    exported = {name for name, _ in _samples(gateway.url)}
    families = {name.removesuffix(suffix) for name in exported for suffix in ("_total", "_bucket", "_count", "_sum", "_created", "")}
    wanted = [line.strip() for line in DASHBOARD_METRICS.read_text().splitlines() if line.strip()]
    assert wanted, "the dashboard names no metric"
    missing = [name for name in wanted if name not in families and name.removesuffix("_total") not in families]
    assert not missing, missing


def test_healthz_and_readyz(gateway: Gateway) -> None:
    alive = httpx.get(gateway.url + "/healthz", timeout=5)
    assert alive.status_code == 200 and alive.json() == {"status": "ok"}
    ready = httpx.get(gateway.url + "/readyz", timeout=5)
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    assert {"database", "migrations"} <= set(ready.json()["checks"])


