"""Media the sandbox holds: `POST /{version}/{phone_number_id}/media` uploads, and the check that a
template send's header media id was uploaded to that phone number (as the platform does).

Limits as Meta documents them: image JPEG/PNG ≤ 5 MB, video MP4/3GPP ≤ 16 MB, audio ≤ 16 MB,
document ≤ 100 MB, sticker WebP ≤ 500 KB. A refused upload or an unknown id answers error 100.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web

from sandbox.errors import Problem

MB = 1024 * 1024
#: MIME type -> the largest upload the platform takes of it (bytes).
MAX_BYTES: dict[str, int] = {
    "image/jpeg": 5 * MB,
    "image/png": 5 * MB,
    "video/mp4": 16 * MB,
    "video/3gpp": 16 * MB,
    "audio/mpeg": 16 * MB,
    "audio/ogg": 16 * MB,
    "audio/aac": 16 * MB,
    "audio/mp4": 16 * MB,
    "image/webp": 500 * 1024,
    "text/plain": 100 * MB,
    "application/pdf": 100 * MB,
    "application/msword": 100 * MB,
    "application/vnd.ms-excel": 100 * MB,
    "application/vnd.ms-powerpoint": 100 * MB,
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": 100 * MB,
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": 100 * MB,
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": 100 * MB,
}
#: The largest request body the upload route reads (the largest document plus the form around it).
MAX_UPLOAD_BODY = 100 * MB + 64 * 1024
MEDIA_PARAMETER_TYPES = frozenset({"image", "video", "document"})


@dataclass(frozen=True)
class StoredMedia:
    """One upload: to which phone number, its type and size."""

    phone_number_id: str
    mime_type: str
    size_bytes: int


@dataclass
class MediaStore:
    """Uploaded media by id, and how many uploads were made (tests read `uploads`)."""

    items: dict[str, StoredMedia] = field(default_factory=dict)
    uploads: int = 0
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(900000000000001))

    def add(self, phone_number_id: str, mime_type: str, size_bytes: int) -> str:
        """Store an upload; its new id."""
        media_id = str(next(self._ids))
        self.items[media_id] = StoredMedia(phone_number_id, mime_type, size_bytes)
        self.uploads += 1
        return media_id

    def to_json(self) -> dict[str, Any]:
        """What `GET /_sandbox/media` answers."""
        return {
            "uploads": self.uploads,
            "media": {
                media_id: {"phone_number_id": m.phone_number_id, "type": m.mime_type, "bytes": m.size_bytes}
                for media_id, m in self.items.items()
            },
        }


async def read_upload(request: web.Request) -> tuple[str, int] | Problem:
    """The declared MIME type and the size of the ``file`` part of an upload form, or the problem."""
    if not request.content_type.startswith("multipart/"):
        return Problem(100, "Param file must be sent as multipart/form-data.")
    fields: dict[str, str] = {}
    size = -1
    file_type = ""
    reader = await request.multipart()
    async for part in reader:
        if not isinstance(part, BodyPartReader) or part.name is None:
            continue
        if part.name == "file":
            file_type = part.headers.get("Content-Type", "")
            size = len(await part.read())
        else:
            fields[part.name] = await part.text()
    return _checked(fields, file_type=file_type, size=size)


def _checked(fields: dict[str, str], *, file_type: str, size: int) -> tuple[str, int] | Problem:
    if fields.get("messaging_product") != "whatsapp":
        return Problem(100, "The parameter messaging_product is required.")
    if size < 0:
        return Problem(100, "The parameter file is required.")
    mime_type = fields.get("type") or file_type
    limit = MAX_BYTES.get(mime_type)
    if limit is None:
        known = ", ".join(MAX_BYTES)
        return Problem(100, f"Param file must be a file with one of the following types: {known}.")
    if size == 0 or size > limit:
        return Problem(100, f"Param file must be between 1 and {limit} bytes for {mime_type}: it is {size}.")
    return mime_type, size


def header_media_problem(store: MediaStore, components: list[Any], *, phone_number_id: str) -> Problem | None:
    """An unknown media id (or one uploaded to another phone number) in a header parameter."""
    for component in components:
        if str(component.get("type", "")).lower() != "header":
            continue
        for parameter in component.get("parameters") or []:
            kind = parameter.get("type") if isinstance(parameter, dict) else None
            media = parameter.get(kind) if kind in MEDIA_PARAMETER_TYPES else None
            if not isinstance(media, dict) or "id" not in media:
                continue
            stored = store.items.get(str(media["id"]))
            if stored is None or stored.phone_number_id != phone_number_id:
                return Problem(100, f"Param {kind}['id'] {media['id']!r} is not a valid media id.")
    return None
