"""Header media uploaded to a real (in-process) sandbox: the upload, its reuse, the re-upload of an id
close to expiring with the planned rows re-pointed, and the sandbox refusing ids it never issued."""

from __future__ import annotations

import asyncio
import functools
import json
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.content.media import header_media_id, refresh_campaign_media
from campaigns.control import find_campaign
from campaigns.core.dbtypes import utcnow
from campaigns.core.models import MEDIA_UPLOAD_TABLE, MESSAGE_TABLE
from campaigns.definitions import CampaignDefinition, create_campaign
from campaigns.planning.planner import plan_campaign
from sandbox.config import SandboxConfig
from sandbox.samples import sample_templates
from sandbox.server import running_sandbox
from tests.acceptance.test_media_cli import PNG_1X1
from tests.campaign_seed import Person, seed_list, seed_templates
from tests.sandbox_support import client_for, template_body
from tests.scheduling_support import sandbox_settings


def _planned(engine: Engine, campaign_id: int) -> list[tuple[str, str]]:
    query = sa.select(MESSAGE_TABLE.c.body, MESSAGE_TABLE.c.content_hash).where(
        MESSAGE_TABLE.c.campaign_id == campaign_id, MESSAGE_TABLE.c.state == "planned"
    )
    with engine.connect() as conn:
        return [(str(body), str(digest)) for body, digest in conn.execute(query.order_by(MESSAGE_TABLE.c.id))]


async def test_an_expiring_media_id_is_uploaded_again_and_planned_rows_use_the_new_one(
    engine: Engine, tmp_path: Path
) -> None:
    picture = tmp_path / "a.png"
    picture.write_bytes(PNG_1X1)
    async with running_sandbox(SandboxConfig()) as sandbox:
        settings = sandbox_settings(sandbox.base_url)
        seed_templates(engine, *sample_templates())
        seed_list(
            engine, "l", [Person(f"+39347000000{i}", {"first_name": "A", "city": "Roma"}) for i in range(5)]
        )
        definition = CampaignDefinition(
            name="c",
            list_name="l",
            template_name="new_collection",
            language="it",
            params={"1": "{first_name}", "2": "{city}"},
            header_media_file=picture,
        )
        campaign = create_campaign(engine, settings=settings, definition=definition)
        assert campaign.id is not None
        # Planning blocks while it uploads: off the loop that serves the sandbox (as run-due does).
        await asyncio.to_thread(plan_campaign, engine, settings=settings, campaign=campaign.id)
        first = _planned(engine, campaign.id)
        old_id = header_media_id(first[0][0])
        assert sandbox.sandbox.media.uploads == 1 and old_id in sandbox.sandbox.media.items

        refresh = functools.partial(refresh_campaign_media, engine, settings=settings)
        fresh = await asyncio.to_thread(refresh, campaign=find_campaign(engine, "c"))
        assert (fresh, sandbox.sandbox.media.uploads) == (0, 1)  # still fresh: nothing to do

        later = utcnow() + timedelta(hours=settings.media.validity_h - settings.media.refresh_margin_h + 1)
        moved = await asyncio.to_thread(refresh, campaign=find_campaign(engine, "c"), now=later)
        second = _planned(engine, campaign.id)
        new_id = header_media_id(second[0][0])
        assert (moved, sandbox.sandbox.media.uploads) == (5, 2)
        assert new_id != old_id and {header_media_id(body) for body, _ in second} == {new_id}
        assert [digest for _, digest in second] == [digest for _, digest in first]  # same content for dedup
        with engine.connect() as conn:
            assert conn.scalar(sa.select(sa.func.count()).select_from(MEDIA_UPLOAD_TABLE)) == 2


async def test_the_sandbox_refuses_a_media_id_it_never_issued(tmp_path: Path) -> None:
    async with running_sandbox(SandboxConfig(pair_spacing_s=0)) as sandbox, client_for(sandbox) as client:
        components = [
            {"type": "header", "parameters": [{"type": "image", "image": {"id": "123456"}}]},
            {"type": "body", "parameters": [{"type": "text", "text": "A"}, {"type": "text", "text": "Roma"}]},
        ]
        answer = await client.send(template_body("+393470000001", "new_collection", "it", components))
        assert answer.code == 100
        assert "image['id'] '123456' is not a valid media id" in json.dumps(answer.body)
