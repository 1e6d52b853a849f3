"""OpenAI's multipart transcription form (router/transcription/form.py): values read from text,
repeated and list fields, the size cap (413), the file's format and the options that go together."""

from __future__ import annotations

import asyncio

import pytest
from starlette.requests import Request

from voxrouter.router.http.errors import ApiError
from voxrouter.router.transcription.form import FORM_OVERHEAD_BYTES, read_form, validate_form

AUDIO = b"RIFF....WAVE"
CAP = 1000


def _refused(fields: list[tuple[str, str]], file: bytes | None = AUDIO, filename: str = "clip.wav") -> tuple[int, str, str]:
    with pytest.raises(ApiError) as caught:
        validate_form(fields, file, filename, CAP)
    return caught.value.status, caught.value.code, caught.value.details


def test_form_values_are_read_from_text() -> None:
    form = validate_form(
        [("model", "whisper-1"), ("temperature", "0.2"), ("response_format", "verbose_json"), ("language", "en"),
         ("timestamp_granularities[]", "word"), ("timestamp_granularities[]", "segment"), ("stream", "false"), ("prompt", "Dashwood")],
        AUDIO, "clip.wav", CAP,
    )  # fmt: skip
    assert (form.model, form.temperature, form.response_format, form.language, form.prompt) == (
        "whisper-1", 0.2, "verbose_json", "en", "Dashwood"
    )  # fmt: skip
    assert form.timestamp_granularities == ["word", "segment"] and form.stream is False and form.file == AUDIO


def test_defaults() -> None:
    form = validate_form([("model", "whisper-1")], AUDIO, "", CAP)  # no file name: the decoder decides
    assert (form.response_format, form.temperature, form.language, form.prompt, form.stream) == ("json", 0.0, None, None, False)
    assert form.timestamp_granularities == []


def test_stream_true() -> None:
    assert validate_form([("model", "m/x"), ("stream", "true")], AUDIO, "a.mp3", CAP).stream is True


@pytest.mark.parametrize(
    ("fields", "code", "needle"),
    [
        ([], "invalid_body", "model"),
        ([("model", "whisper-1"), ("model", "whisper-1")], "invalid_body", "more than once"),
        ([("model", "whisper-1"), ("temperature", "1.5")], "invalid_body", "temperature"),
        ([("model", "whisper-1"), ("temperature", "warm")], "invalid_body", "temperature"),
        ([("model", "whisper-1"), ("response_format", "diarized_json")], "invalid_body", "response_format"),
        ([("model", "whisper-1"), ("stream", "maybe")], "invalid_body", "stream"),
        ([("model", "whisper-1"), ("timestamp_granularities[]", "word")], "invalid_body", "verbose_json"),
        ([("model", "whisper-1"), ("timestamp_granularities[]", "letter"), ("response_format", "verbose_json")], "invalid_body", "timestamp"),
        ([("model", "whisper-1"), ("stream", "true"), ("response_format", "srt")], "invalid_body", "stream"),
        ([("model", "whisper-1"), ("voice", "alloy")], "invalid_body", "voice"),
        ([("model", "whisper\x00-1")], "invalid_body", "NUL"),
        ([("model", "whisper-1"), ("prompt", "a\x00b")], "invalid_body", "NUL"),
        ([("model", "whisper 1")], "invalid_body", "model"),
    ],
)
def test_refusals(fields: list[tuple[str, str]], code: str, needle: str) -> None:
    status, got, details = _refused(fields)
    assert (status, got) == (400, code) and needle in details, details


def test_a_missing_file_is_invalid_body() -> None:
    assert _refused([("model", "whisper-1")], file=None)[:2] == (400, "invalid_body")


def test_a_file_over_the_cap_is_413() -> None:
    assert validate_form([("model", "whisper-1")], b"x" * CAP, "a.wav", CAP).file == b"x" * CAP
    assert _refused([("model", "whisper-1")], file=b"x" * (CAP + 1))[:2] == (413, "invalid_body")


@pytest.mark.parametrize("name", ["a.flac", "a.MP3", "a.mp4", "a.mpeg", "a.mpga", "a.m4a", "a.ogg", "a.wav", "a.webm", "noext"])
def test_openais_formats_are_taken(name: str) -> None:
    assert validate_form([("model", "whisper-1")], AUDIO, name, CAP).model == "whisper-1"


@pytest.mark.parametrize("name", ["a.png", "notes.txt", "a.wav.exe"])
def test_other_formats_are_invalid_audio(name: str) -> None:
    assert _refused([("model", "whisper-1")], filename=name)[:2] == (400, "invalid_audio")


def _request(body: bytes, content_type: str) -> Request:
    sent = False

    async def receive() -> dict[str, object]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers, "query_string": b""}, receive)


def _multipart(parts: list[tuple[str, bytes, str | None]]) -> tuple[bytes, str]:
    boundary = "voxboundary"
    out = b""
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_read_form_parses_multipart() -> None:
    body, content_type = _multipart(
        [("file", AUDIO, "speech.ogg"), ("model", b"whisper-1", None), ("timestamp_granularities[]", b"word", None),
         ("timestamp_granularities[]", b"segment", None), ("response_format", b"verbose_json", None)]
    )  # fmt: skip
    form, filename = asyncio.run(read_form(_request(body, content_type), CAP))
    assert filename == "speech.ogg" and form.file == AUDIO and form.timestamp_granularities == ["word", "segment"]


def test_read_form_refuses_json_and_a_second_file_field() -> None:
    with pytest.raises(ApiError) as caught:
        asyncio.run(read_form(_request(b'{"model": "whisper-1"}', "application/json"), CAP))
    assert (caught.value.status, caught.value.code) == (400, "invalid_body")
    body, content_type = _multipart([("file", AUDIO, "a.wav"), ("prompt", b"x", "prompt.txt"), ("model", b"whisper-1", None)])
    with pytest.raises(ApiError) as caught:
        asyncio.run(read_form(_request(body, content_type), CAP))
    assert (caught.value.status, caught.value.code) == (400, "invalid_body")


def test_read_form_stops_at_the_cap_before_parsing() -> None:
    body, content_type = _multipart([("file", b"x" * (CAP + FORM_OVERHEAD_BYTES), "a.wav"), ("model", b"whisper-1", None)])
    with pytest.raises(ApiError) as caught:
        asyncio.run(read_form(_request(body, content_type), CAP))
    assert (caught.value.status, caught.value.code) == (413, "invalid_body")
