"""Header media from a file (`campaigns create --header-media-file`): checked, uploaded once per sender.

When: `campaigns create` checks the file (type and size against `[media]`, before anything is
uploaded) and stores its path, sha256 and MIME type. Planning uploads it to the campaign's sender
(``POST /{version}/{phone_number_id}/media``, multipart: ``file``, ``type``, ``messaging_product``)
unless that phone number already holds the same bytes (same sha256) uploaded less than
``validity_h - refresh_margin_h`` hours ago: then the stored media id is reused. So a campaign of
any size costs one upload per sender and file, and campaigns sharing a file share the id.

The ledger freezes ``{"image": {"id": …}}`` (video, document likewise) in every body. A run that
starts when the id is close to expiring (`refresh_campaign_media`) uploads again and re-points the
campaign's planned rows at the new id. The content hash is computed over the file's sha256, not the
id, so a re-upload never makes the same content look new to the dedup guarantee.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import mimetypes
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from campaigns.core.db import write_transaction
from campaigns.core.dbtypes import utcnow
from campaigns.core.exceptions import ConfigError, InputFileError, PlatformError, classify_platform_error
from campaigns.core.models import CAMPAIGN_TABLE as CAMPAIGN
from campaigns.core.models import MEDIA_UPLOAD_TABLE as UPLOAD
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.models import Campaign, MessageState
from campaigns.core.settings import Settings
from campaigns.core.settings_sections import MediaSettings

_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class MediaFile:
    """A checked header file: where it is, what it is, how big, and its sha256."""

    path: Path
    mime_type: str
    size_bytes: int
    sha256: str


def _mime_type(path: Path) -> str | None:
    guessed, _ = mimetypes.guess_type(path.name, strict=False)
    return guessed


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_media_file(path: Path, *, header_format: str, limits: MediaSettings) -> MediaFile:
    """The file as a `MediaFile`, or `InputFileError` naming the file and the limit it breaks."""
    label = f"--header-media-file {path}"
    if not path.is_file():
        raise InputFileError(f"{label}: no such file")
    types, max_bytes = limits.limits_for(header_format)
    mime_type = _mime_type(path)
    if mime_type not in types:
        raise InputFileError(
            f"{label}: type {mime_type or 'unknown'} cannot be a {header_format} header "
            f"(accepted: {', '.join(types)})"
        )
    size = path.stat().st_size
    if size > max_bytes:
        raise InputFileError(f"{label}: {size:,} bytes, the {header_format} limit is {max_bytes:,} bytes")
    if size == 0:
        raise InputFileError(f"{label}: the file is empty")
    return MediaFile(path=path.resolve(), mime_type=mime_type, size_bytes=size, sha256=_sha256(path))


@dataclass(frozen=True)
class UploadTarget:
    """Where to upload: the Graph API base, version, phone number and token."""

    base_url: str
    version: str
    phone_number_id: str
    access_token: str
    timeout_s: float

    @property
    def url(self) -> str:
        return f"{self.base_url}/{self.version}/{self.phone_number_id}/media"


def upload_target(settings: Settings, sender_name: str) -> UploadTarget:
    """The upload endpoint of a sender (`ConfigError` without an access token)."""
    wa = settings.whatsapp
    if not wa.access_token:
        raise ConfigError("uploading header media needs whatsapp.access_token (WACAMP_ACCESS_TOKEN)")
    return UploadTarget(
        base_url=wa.base_url,
        version=wa.version,
        phone_number_id=settings.sender(sender_name).phone_number_id,
        access_token=wa.access_token,
        timeout_s=settings.media.upload_timeout_s,
    )


def _upload_error(status: int, text: str) -> PlatformError:
    try:
        payload = json.loads(text) if text else {}
    except json.JSONDecodeError:
        payload = {}
    error = payload.get("error", {}) if isinstance(payload, dict) else {}
    error = error if isinstance(error, dict) else {}
    code = error.get("code")
    return classify_platform_error(
        code=code if isinstance(code, int) else None,
        title=str(error.get("message", f"HTTP {status}")),
        http_status=status,
    )


async def upload_media(target: UploadTarget, media: MediaFile) -> str:
    """``POST /{phone_number_id}/media`` (multipart); the media id, or the classified `PlatformError`."""
    form = aiohttp.FormData()
    form.add_field("messaging_product", "whatsapp")
    form.add_field("type", media.mime_type)
    timeout = aiohttp.ClientTimeout(total=target.timeout_s)
    headers = {"Authorization": f"Bearer {target.access_token}"}
    with media.path.open("rb") as handle:
        form.add_field("file", handle, filename=media.path.name, content_type=media.mime_type)
        async with (
            aiohttp.ClientSession(timeout=timeout, headers=headers) as session,
            session.post(target.url, data=form) as response,
        ):
            text = await response.text()
            status = response.status
    if status >= 400:
        raise _upload_error(status, text)
    media_id = json.loads(text).get("id") if text else None
    if not media_id:
        raise _upload_error(status, '{"error":{"message":"the upload answer has no id"}}')
    return str(media_id)


def run_blocking(coroutine: Coroutine[Any, Any, str]) -> str:
    """Run `coroutine` to the end from synchronous code, even when an event loop is running here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def fresh_after(settings: Settings, now: datetime) -> datetime:
    """Uploads older than this are too close to expiring to be sent with."""
    usable_h = settings.media.validity_h - settings.media.refresh_margin_h
    return now - timedelta(hours=max(usable_h, 0.0))


def stored_media_id(conn: Connection, *, phone_number_id: str, sha256: str, after: datetime) -> str | None:
    """The newest media id of these bytes on this phone number uploaded after `after`, if any."""
    query = (
        sa.select(UPLOAD.c.media_id)
        .where(
            UPLOAD.c.phone_number_id == phone_number_id,
            UPLOAD.c.sha256 == sha256,
            UPLOAD.c.uploaded_at > after,
        )
        .order_by(UPLOAD.c.uploaded_at.desc())
        .limit(1)
    )
    value = conn.execute(query).scalar()
    return str(value) if value is not None else None


def campaign_media(campaign: Campaign) -> MediaFile:
    """The header file a campaign was created with, as stored."""
    assert campaign.header_media_file and campaign.header_media_sha256 and campaign.header_media_type
    path = Path(campaign.header_media_file)
    size = path.stat().st_size if path.is_file() else 0
    return MediaFile(
        path=path, mime_type=campaign.header_media_type, size_bytes=size, sha256=campaign.header_media_sha256
    )


def _checked_again(media: MediaFile) -> MediaFile:
    """The file must still hold the bytes the campaign was created with before it is uploaded."""
    if not media.path.is_file():
        raise InputFileError(f"header media file {media.path}: no longer exists (needed to upload it)")
    if _sha256(media.path) != media.sha256:
        raise InputFileError(
            f"header media file {media.path}: changed since the campaign was created (sha256 differs); "
            "create a new campaign for new content"
        )
    return media


def ensure_media_id(
    engine: Engine, *, settings: Settings, campaign: Campaign, now: datetime | None = None
) -> str:
    """The media id of the campaign's header file on its sender: stored if fresh, else uploaded now."""
    media = campaign_media(campaign)
    target = upload_target(settings, campaign.sender_name)
    at = now or utcnow()
    with engine.connect() as conn:
        found = stored_media_id(
            conn, phone_number_id=target.phone_number_id, sha256=media.sha256, after=fresh_after(settings, at)
        )
    if found is not None:
        return found
    media_id = run_blocking(upload_media(target, _checked_again(media)))
    row = {
        "phone_number_id": target.phone_number_id,
        "sha256": media.sha256,
        "mime_type": media.mime_type,
        "size_bytes": media.size_bytes,
        "file_name": media.path.name[:500],
        "media_id": media_id,
        "uploaded_at": at,
    }
    with write_transaction(engine) as conn:
        conn.execute(sa.insert(UPLOAD), row)
    return media_id


def _id_fragment(media_id: str) -> str:
    return f'"id":{json.dumps(media_id)}'


def refresh_campaign_media(
    engine: Engine, *, settings: Settings, campaign: Campaign, now: datetime | None = None
) -> int:
    """Before a run: re-upload an expiring header file and re-point planned rows; rows changed.

    A campaign without a header file, or whose planned rows already use a fresh id, changes nothing.
    Rows being sent or already answered keep the body they were sent with.
    """
    if not campaign.header_media_file or campaign.id is None:
        return 0
    new = _id_fragment(ensure_media_id(engine, settings=settings, campaign=campaign, now=now))
    stale = sa.and_(
        MESSAGE.c.campaign_id == campaign.id,
        MESSAGE.c.state == MessageState.PLANNED.value,
        sa.not_(MESSAGE.c.body.contains(new, autoescape=True)),
    )
    changed = 0
    with write_transaction(engine) as conn:
        while (body := conn.execute(sa.select(MESSAGE.c.body).where(stale).limit(1)).scalar()) is not None:
            old = header_media_id(str(body))
            if old is None:
                break
            replaced = sa.func.replace(MESSAGE.c.body, _id_fragment(old), new)
            count = int(conn.execute(sa.update(MESSAGE).where(stale).values(body=replaced)).rowcount)
            if count == 0:
                break
            changed += count
    return changed


def refresh_media_of(engine: Engine, *, settings: Settings, campaign_id: int) -> int:
    """`refresh_campaign_media` for a campaign id (what a run calls before its first claim)."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(CAMPAIGN).where(CAMPAIGN.c.id == campaign_id)).first()
    if row is None or row.header_media_file is None:
        return 0
    campaign = Campaign.model_validate(dict(row._mapping))
    return refresh_campaign_media(engine, settings=settings, campaign=campaign)


def header_media_id(body: str) -> str | None:
    """The media id in a stored body's header parameter, if it has one."""
    template = json.loads(body).get("template", {})
    for component in template.get("components", []):
        if component.get("type") != "header":
            continue
        for parameter in component.get("parameters", []):
            media = parameter.get(parameter.get("type", ""), {})
            if isinstance(media, dict) and media.get("id"):
                return str(media["id"])
    return None
