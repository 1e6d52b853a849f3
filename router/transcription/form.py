"""Reading OpenAI's multipart transcription form into `schemas.TranscriptionRequest`, with the
upload's size cap and errors in the wire shape. `validate_form` is the pure part (fields in,
model out); `read_form` reads the request body (413 past the cap) and parses the multipart."""

from __future__ import annotations

from typing import AsyncIterator, Iterable, TypeVar

from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from voxrouter.router.http.body import describe_validation, read_raw
from voxrouter.router.http.errors import ApiError
from voxrouter.router.schemas import TranscriptionRequest, TranslationRequest

Form = TypeVar("Form", TranscriptionRequest, TranslationRequest)

# OpenAI's list, plus the names the same containers go by (oga, opus: Ogg; mov: MP4).
EXTENSIONS = frozenset({"flac", "mp3", "mp4", "mpeg", "mpga", "m4a", "ogg", "oga", "opus", "wav", "webm"})
FORM_OVERHEAD_BYTES = 64 * 1024  # the other fields and the multipart framing, beyond the file
_LISTS = {"timestamp_granularities[]": "timestamp_granularities[]", "timestamp_granularities": "timestamp_granularities[]"}
_MAX_FIELD_BYTES = 8 * 1024  # a prompt of 2,000 characters fits


def validate_form(
    fields: Iterable[tuple[str, str]],
    file: bytes | None,
    filename: str,
    max_file_bytes: int,
    schema: type[Form] = TranscriptionRequest,  # type: ignore[assignment]
) -> Form:
    """The form's text fields (repeated keys kept, in order) and its one file, checked against
    `schema` (a transcription's form, or a translation's)."""
    if file is None:
        raise ApiError(400, "invalid_body", "file: a multipart file field named 'file' is required")
    if len(file) > max_file_bytes:
        raise ApiError(413, "invalid_body", f"file is larger than {max_file_bytes} bytes")
    extension = filename.rpartition(".")[2].lower() if "." in filename else ""
    if extension and extension not in EXTENSIONS:
        raise ApiError(
            400, "invalid_audio", f"file: unsupported format {extension!r}; supported: {', '.join(sorted(EXTENSIONS))}"
        )
    values: dict[str, object] = {"file": file}
    for key, value in fields:
        if "\x00" in value or "\x00" in key:
            raise ApiError(400, "invalid_body", "fields may not contain NUL (U+0000) characters")
        if key in _LISTS:
            listed = values.setdefault(_LISTS[key], [])
            assert isinstance(listed, list)
            listed.append(value)
        elif key in values:
            raise ApiError(400, "invalid_body", f"{key}: given more than once")
        else:
            values[key] = value
    try:
        form = schema.model_validate(values)
    except ValidationError as exc:
        raise ApiError(400, "invalid_body", describe_validation(exc)) from None
    if not isinstance(form, TranscriptionRequest):
        return form
    if form.timestamp_granularities and form.response_format != "verbose_json":
        raise ApiError(400, "invalid_body", "timestamp_granularities[]: needs response_format verbose_json")
    if form.stream and form.response_format not in ("json", "text"):
        raise ApiError(400, "invalid_body", f"stream: streams text only (response_format json or text), not {form.response_format}")
    return form


async def read_form(
    request: Request, max_file_bytes: int, schema: type[Form] = TranscriptionRequest  # type: ignore[assignment]
) -> tuple[Form, str]:
    """The request's form and its file's name; 413 as soon as the body passes the cap."""
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise ApiError(400, "invalid_body", "the body must be multipart/form-data with a 'file' field")
    raw = await read_raw(request, max_file_bytes + FORM_OVERHEAD_BYTES)
    fields, file, filename = await parse_multipart(request, raw)
    return validate_form(fields, file, filename, max_file_bytes, schema), filename


async def parse_multipart(request: Request, raw: bytes) -> tuple[list[tuple[str, str]], bytes | None, str]:
    """The text fields, the bytes of the file field named `file` (None without one) and its name."""

    async def body() -> AsyncIterator[bytes]:
        yield raw

    parser = MultiPartParser(request.headers, body(), max_files=1, max_fields=32, max_part_size=_MAX_FIELD_BYTES)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise ApiError(400, "invalid_body", f"multipart: {exc.message}") from None
    fields: list[tuple[str, str]] = []
    file: bytes | None = None
    filename = ""
    try:
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key != "file":
                    raise ApiError(400, "invalid_body", f"{key}: only the field 'file' may be a file")
                file, filename = await value.read(), value.filename or ""
            else:
                fields.append((key, value))
    finally:
        await form.close()
    return fields, file, filename
