"""Live responses conform to openapi.yaml (that it is generated from the code is tests/unit/test_openapi.py)."""

from __future__ import annotations

from pathlib import Path

import httpx
import jsonschema
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).resolve().parents[2] / "openapi.yaml"
SPEC = yaml.safe_load(SPEC_PATH.read_text())
_REGISTRY = Registry().with_resource("urn:voxrouter", Resource.from_contents(SPEC, default_specification=DRAFT202012))


def _validate(instance: object, schema: dict) -> None:
    schema = yaml.safe_load(yaml.safe_dump(schema).replace("'#/components", "'urn:voxrouter#/components"))
    jsonschema.Draft202012Validator(schema, registry=_REGISTRY).validate(instance)


def _check(response: httpx.Response, path: str, method: str = "get") -> None:
    operation = SPEC["paths"][path][method]
    documented = operation["responses"].get(str(response.status_code))
    assert documented, f"{method.upper()} {path} answered undocumented status {response.status_code}"
    media_type = response.headers["content-type"].split(";")[0].strip()
    assert media_type in documented["content"], f"{media_type} not documented for {path}"
    if media_type == "application/json":
        _validate(response.json(), documented["content"][media_type]["schema"])


def test_live_responses_match_spec(gateway, api_key):
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=10) as client:
        for fmt in ("mp3", "pcm", "wav"):
            response = client.post("/v1/audio/speech", json={"model": "openai/tts-1", "voice": "alloy", "input": "Spec.", "response_format": fmt})
            _check(response, "/v1/audio/speech", "post")
        sse = client.post("/v1/audio/speech", json={"model": "openai/gpt-4o-mini-tts", "voice": "alloy", "input": "Spec.", "stream_format": "sse"})
        _check(sse, "/v1/audio/speech", "post")
        for line in sse.text.splitlines():
            if line.startswith("data: "):
                event = yaml.safe_load(line[6:])
                name = "SpeechAudioDelta" if event["type"] == "speech.audio.delta" else "SpeechAudioDone"
                _validate(event, {"$ref": f"#/components/schemas/{name}"})
        for bad in ({"model": "x"}, {"model": "nope/x", "voice": "a", "input": "b"}, {"model": "openai/tts-1", "voice": "a", "input": "b" * 5000}):
            _check(client.post("/v1/audio/speech", json=bad), "/v1/audio/speech", "post")
        _check(client.post("/v1/audio/speech", json={}, headers={"Authorization": "Bearer pk_wrong"}), "/v1/audio/speech", "post")
        for path in ("/v1/providers", "/v1/voices", "/v1/status", "/v1/credits", "/v1/credits/activity"):
            _check(client.get(path), path)
            _check(client.get(path, headers={"Authorization": ""}), path)
        _check(client.get("/v1/voices?provider=openai,elevenlabs&language=EN&gender=female"), "/v1/voices")
        _check(client.get("/v1/credits/activity?limit=500"), "/v1/credits/activity")


_OPERATIONS = sorted((path, method) for path, methods in SPEC["paths"].items() for method in methods)


@pytest.mark.parametrize(("path", "method"), _OPERATIONS)
def test_every_documented_operation_is_routed_and_guarded_as_documented(gateway, path, method):
    operation = SPEC["paths"][path][method]
    response = httpx.request(method.upper(), gateway.url + path.replace("{key_id}", "key_nope"))
    if operation["security"]:
        assert response.status_code == 401, response.text  # routed, and guarded
    else:
        assert response.status_code in (200, 400), response.text  # public: routed, answers without credentials
    _check(response, path, method)
