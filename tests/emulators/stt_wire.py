"""What the speech-to-text emulators share: the multipart upload read and logged, the canned
transcript they hear in any audio, and the injected fault (EmulatorState's script / behaviour)."""

from __future__ import annotations

import dataclasses

from starlette.datastructures import UploadFile
from starlette.requests import Request

from tests.emulators.behaviour import Behaviour, EmulatorState, Recorded, before_first_byte

TEXT = "Hello from the emulator."
# (word, start, end) in seconds: what every emulator hears, whatever the audio.
WORDS = [("Hello", 0.10, 0.40), ("from", 0.45, 0.60), ("the", 0.62, 0.70), ("emulator.", 0.72, 1.10)]
DURATION_S = 1.2


@dataclasses.dataclass
class Upload:
    fields: list[tuple[str, str]]  # the text fields, in order, repeated keys kept
    filename: str | None
    content_type: str | None
    audio: bytes | None

    def get(self, key: str) -> str | None:
        return next((v for k, v in self.fields if k == key), None)

    def all(self, key: str) -> list[str]:
        return [v for k, v in self.fields if k == key]


async def read_upload(request: Request, state: EmulatorState) -> Upload:
    """Parse and log the multipart body (the log's `body` is {"fields", "filename", "size"})."""
    form = await request.form()
    fields: list[tuple[str, str]] = []
    filename = content_type = None
    audio = None
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key == "file":
                filename, content_type, audio = value.filename, value.content_type, await value.read()
        else:
            fields.append((key, value))
    await form.close()
    body = {"fields": fields, "filename": filename, "size": len(audio) if audio is not None else None}
    state.requests.append(Recorded(request.method, request.url.path, dict(request.headers), dict(request.query_params), body))
    return Upload(fields, filename, content_type, audio)


async def fault(request: Request, state: EmulatorState) -> Behaviour | None:
    """The behaviour of this transcription (its fault, if one is due), or None if the client left."""
    b = state.next_behaviour()
    if not await before_first_byte(request, state, b):
        return None
    return b
