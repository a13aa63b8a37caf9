"""`templates create / wait / delete`: a template written by a person, checked here, reviewed by Meta.

The file (JSON or YAML) holds what ``POST /{waba_id}/message_templates`` takes::

    name: autumn_promo              # lowercase letters, digits and underscores, at most 512
    language: it
    category: MARKETING             # MARKETING | UTILITY | AUTHENTICATION
    parameter_format: POSITIONAL    # or NAMED; read from the placeholders when absent
    message_send_ttl_seconds: 86400 # optional
    components:
      - type: BODY
        text: "Ciao {{1}}, usa il codice {{2}}"
        example: {body_text: [["Giulia", "AUTUNNO"]]}

`check_submission` refuses, with one line naming the file and the field, what the platform would
refuse: a bad name, text over its length (body 1,024, header text 60, footer 60), placeholders
numbered with gaps or mixing numbers and names, a format other than the declared one, a placeholder
without an example, a TTL outside its category's range. The accepted template is stored PENDING;
`templates sync` and the ``message_template_status_update`` webhook move it on.

`wait_for_review` polls the platform's listing (``GET …/message_templates?name=&language=``), not
the local database, so it works with no webhook receiver running; each answer is stored as well.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import Engine

from campaigns.core.db import write_transaction
from campaigns.core.dbtypes import utcnow
from campaigns.core.exceptions import InputFileError, PlatformError, UserError
from campaigns.core.models import CAMPAIGN_TABLE as CAMPAIGN
from campaigns.core.models import TEMPLATE_TABLE as TEMPLATE
from campaigns.core.models import CampaignState
from campaigns.templates.catalog import (
    TemplateFormatError,
    TemplateRecord,
    parse_template,
    placeholder_keys,
    store_templates,
)
from campaigns.templates.sync import SyncConfig, fetch_templates, platform_error

NAME_RE = re.compile(r"^[a-z0-9_]{1,512}$")
NAMED_KEY_RE = re.compile(r"^[a-z][a-z0-9_]*$")
CATEGORIES = frozenset({"MARKETING", "UTILITY", "AUTHENTICATION"})
#: Longest text per component (characters), as Meta documents them.
TEXT_MAX = {"HEADER": 60, "BODY": 1024, "FOOTER": 60}
#: message_send_ttl_seconds allowed per category (seconds, inclusive).
TTL_RANGE_S = {"MARKETING": (43_200, 2_592_000), "UTILITY": (30, 43_200), "AUTHENTICATION": (30, 900)}
SUBMITTED_FIELDS = (
    "name",
    "language",
    "category",
    "parameter_format",
    "components",
    "message_send_ttl_seconds",
)
#: Review outcomes after which `templates wait` stops waiting (exit 1); APPROVED exits 0.
REFUSED_STATUSES = frozenset({"REJECTED", "DISABLED", "DELETED"})
#: Campaign states in which a campaign still needs its template (`templates delete` refuses).
NEEDING_STATES = (
    CampaignState.DRAFT,
    CampaignState.PLANNED,
    CampaignState.RUNNING,
    CampaignState.PAUSED,
    CampaignState.WAITING,
)


class SubmissionError(UserError):
    """The platform refused a submission or a deletion; the message says why."""


@dataclass(frozen=True)
class Submission:
    """A checked template, ready to be POSTed."""

    body: dict[str, Any]
    record: TemplateRecord


def read_template_file(path: Path) -> Any:
    """The JSON or YAML (by suffix: .yaml / .yml, else JSON) object of a template file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InputFileError(f"{path}: cannot be read ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{path}: not UTF-8 text") from exc
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}: " if mark is not None else ""
            raise InputFileError(f"{path}: {where}not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputFileError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from exc


def _check_name(data: Mapping[str, Any]) -> None:
    name = data.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise TemplateFormatError(
            f"field 'name' {name!r} must be 1 to 512 lowercase letters, digits and underscores"
        )
    if str(data.get("category", "")).upper() not in CATEGORIES:
        raise TemplateFormatError(
            f"field 'category' {data.get('category')!r} is not MARKETING, UTILITY or AUTHENTICATION"
        )


def _check_lengths(components: list[dict[str, Any]]) -> None:
    for index, component in enumerate(components):
        kind = str(component.get("type", "")).upper()
        text = component.get("text")
        limit = TEXT_MAX.get(kind)
        if limit is not None and isinstance(text, str) and len(text) > limit:
            raise TemplateFormatError(
                f"field 'components[{index}].text' ({kind}) is {len(text)} characters, the limit is {limit}"
            )


def _check_placeholders(index: int, text: str, parameter_format: str) -> None:
    keys = placeholder_keys(text)
    where = f"field 'components[{index}].text'"
    numbered = [k for k in keys if k.isdigit()]
    if numbered and len(numbered) != len(keys):
        raise TemplateFormatError(f"{where} mixes numbered and named placeholders")
    if numbered:
        if parameter_format != "POSITIONAL":
            raise TemplateFormatError(f"{where} has numbered placeholders but parameter_format is NAMED")
        if [int(k) for k in numbered] != list(range(1, len(numbered) + 1)):
            found = ", ".join("{{" + k + "}}" for k in numbered)
            raise TemplateFormatError(
                f"{where}: placeholders must be {{{{1}}}}, {{{{2}}}} … in turn ({found})"
            )
    elif keys:
        if parameter_format != "NAMED":
            raise TemplateFormatError(f"{where} has named placeholders but parameter_format is POSITIONAL")
        bad = next((k for k in keys if not NAMED_KEY_RE.match(k)), None)
        if bad is not None:
            raise TemplateFormatError(
                f"{where}: placeholder {{{{{bad}}}}} must be lowercase letters, digits, _"
            )


def _check_ttl(data: Mapping[str, Any], category: str) -> None:
    ttl = data.get("message_send_ttl_seconds")
    if ttl is None:
        return
    low, high = TTL_RANGE_S[category]
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not low <= ttl <= high:
        raise TemplateFormatError(
            f"field 'message_send_ttl_seconds' {ttl!r} must be whole seconds from {low} to {high} "
            f"for {category}"
        )


def _check(data: Any) -> Submission:
    if not isinstance(data, Mapping):
        raise TemplateFormatError("is not an object with name, language, category and components")
    _check_name(data)
    record = parse_template({**data, "status": "PENDING"})
    _check_lengths(record.components)
    for index, component in enumerate(record.components):
        if isinstance(component.get("text"), str) and str(component.get("type")).upper() != "BUTTONS":
            _check_placeholders(index, component["text"], record.parameter_format)
    missing = [p.label for p in record.shape().placeholders() if p.example is None]
    if missing:
        raise TemplateFormatError(f"placeholder {missing[0]} has no example (every placeholder needs one)")
    _check_ttl(data, record.category)
    body = {key: data[key] for key in SUBMITTED_FIELDS if key in data}
    body["category"] = record.category
    body["parameter_format"] = record.parameter_format
    return Submission(body=body, record=record)


def check_submission(path: Path) -> Submission:
    """Read and check a template file; `InputFileError` names the file and the field."""
    data = read_template_file(path)
    try:
        return _check(data)
    except TemplateFormatError as exc:
        raise InputFileError(f"{path}: {exc}") from exc


# -------------------------------------------------------------------------------- platform calls


async def _call(
    config: SyncConfig, method: str, *, params: dict[str, str] | None = None, body: Any = None
) -> Any:
    timeout = aiohttp.ClientTimeout(total=config.request_timeout_s, connect=config.connect_timeout_s)
    headers = {"Authorization": f"Bearer {config.access_token}"}
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout, headers=headers) as session,
            session.request(method, config.first_url, params=params, json=body) as response,
        ):
            text, status = await response.text(), response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise SubmissionError(f"{method} {config.first_url}: {type(exc).__name__}: {exc}") from exc
    try:
        payload = json.loads(text) if text else {}
    except json.JSONDecodeError:
        payload = {}
    if status >= 400 or (isinstance(payload, dict) and "error" in payload):
        error: PlatformError = platform_error(status, payload, None)
        raise SubmissionError(f"{method} {config.first_url}: {error}") from error
    return payload


async def submit(config: SyncConfig, submission: Submission) -> TemplateRecord:
    """POST the template; the record as the platform took it (its id and status, usually PENDING)."""
    answer = await _call(config, "POST", body=submission.body)
    answer = answer if isinstance(answer, dict) else {}
    record = submission.record
    return TemplateRecord(
        **{
            **record.__dict__,
            "status": str(answer.get("status") or "PENDING").upper(),
            "category": str(answer.get("category") or record.category).upper(),
            "platform_id": str(answer["id"]) if answer.get("id") is not None else None,
        }
    )


def store_submitted(engine: Engine, record: TemplateRecord, *, now: datetime | None = None) -> None:
    """Store (or replace) the submitted template with its status and when it was submitted."""
    at = now or utcnow()
    store_templates(engine, [record], mark_missing_gone=False, now=at)
    with write_transaction(engine) as conn:
        conn.execute(
            sa.update(TEMPLATE)
            .where(TEMPLATE.c.name == record.name, TEMPLATE.c.language == record.language)
            .values(submitted_at=at)
        )


async def delete_on_platform(config: SyncConfig, name: str) -> None:
    """``DELETE /{waba_id}/message_templates?name=NAME`` (every language of that name)."""
    await _call(config, "DELETE", params={"name": name})


def campaigns_needing(engine: Engine, name: str) -> list[str]:
    """Names of the campaigns not finished that send template `name`."""
    query = sa.select(CAMPAIGN.c.name).where(
        CAMPAIGN.c.template_name == name, CAMPAIGN.c.state.in_([s.value for s in NEEDING_STATES])
    )
    with engine.connect() as conn:
        return list(conn.execute(query.order_by(CAMPAIGN.c.name)).scalars())


def mark_deleted(engine: Engine, name: str, *, now: datetime | None = None) -> int:
    """The local rows of `name`: status DELETED and gone (kept: finished campaigns' reports name them)."""
    at = now or utcnow()
    with write_transaction(engine) as conn:
        return int(
            conn.execute(
                sa.update(TEMPLATE).where(TEMPLATE.c.name == name).values(status="DELETED", gone_at=at)
            ).rowcount
        )


# ------------------------------------------------------------------------------------- waiting


@dataclass(frozen=True)
class WaitOutcome:
    """How `wait_for_review` ended: the template's last record, or None when it never showed up."""

    record: TemplateRecord | None
    timed_out: bool


async def _current(config: SyncConfig, name: str, language: str) -> TemplateRecord | None:
    items = await fetch_templates(config, name=name)
    found = [parse_template(item) for item in items if isinstance(item, dict)]
    return next((r for r in found if r.name == name and r.language == language), None)


async def wait_for_review(
    engine: Engine,
    config: SyncConfig,
    *,
    name: str,
    language: str,
    timeout_s: float,
    poll_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> WaitOutcome:
    """Poll the platform until the template is APPROVED or refused, or `timeout_s` passes."""
    deadline = clock() + timeout_s
    record: TemplateRecord | None = None
    while True:
        record = await _current(config, name, language) or record
        if record is not None:
            store_templates(engine, [record], mark_missing_gone=False)
            if record.status == "APPROVED" or record.status in REFUSED_STATUSES:
                return WaitOutcome(record, timed_out=False)
        left = deadline - clock()
        if left <= 0:
            return WaitOutcome(record, timed_out=True)
        await sleep(min(poll_s, left))
