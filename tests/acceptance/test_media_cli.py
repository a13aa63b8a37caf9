"""`campaigns create --header-media-file` through the installed CLI against an in-process sandbox:
the file is checked at create time, uploaded once per sender at plan time, and every body carries
the media id the sandbox holds."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.core.db import make_engine, upgrade
from campaigns.core.models import MEDIA_UPLOAD_TABLE, MESSAGE_TABLE
from sandbox.config import SandboxConfig
from sandbox.samples import sample_contacts_text
from sandbox.server import running_sandbox
from tests.conftest import wacamp_executable
from tests.scheduling_support import sandbox_env

#: The smallest PNG there is (1x1, transparent): a real image header.
PNG_1X1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d4944415478da63fcffff3f0300050001fe5d5ad4a80000000049454e44ae426082"
)


@pytest.fixture
def migrated(db_url: str) -> Iterator[tuple[str, Engine]]:
    engine = make_engine(db_url)
    upgrade(engine)
    yield db_url, engine
    engine.dispose()


async def wacamp(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WACAMP_")}
    process = await asyncio.create_subprocess_exec(
        wacamp_executable(),
        *args,
        env={**clean, **env},
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def _create_args(name: str, media: Path) -> list[str]:
    return [
        "campaigns",
        "create",
        name,
        "--list",
        "everyone",
        "--template",
        "new_collection",
        "--language",
        "it",
        "--param",
        "1={first_name}",
        "--param",
        "2={city}",
        "--button-payload",
        "0=STOP",
        "--header-media-file",
        str(media),
    ]


async def test_a_header_image_is_uploaded_once_for_a_1000_recipient_campaign(
    migrated: tuple[str, Engine], tmp_path: Path
) -> None:
    url, engine = migrated
    (tmp_path / "contacts.csv").write_text(sample_contacts_text(), encoding="utf-8")
    picture = tmp_path / "collezione.png"
    picture.write_bytes(PNG_1X1)
    async with running_sandbox(SandboxConfig(mps=0, pair_spacing_s=0, not_on_whatsapp_share=0)) as sandbox:
        env = {
            **sandbox_env(sandbox.base_url, WACAMP_RATE_PER_S="1000"),
            "WACAMP_DATABASE_URL": url,
            "WACAMP_WABA_ID": "200000000000001",
        }
        for args in (["templates", "sync"], ["contacts", "import", "contacts.csv", "--list", "everyone"]):
            code, _, err = await wacamp(*args, env=env, cwd=tmp_path)
            assert code == 0, err
        code, _, err = await wacamp(*_create_args("autunno", picture), env=env, cwd=tmp_path)
        assert code == 0, err
        assert sandbox.sandbox.media.uploads == 0  # checked at create time, uploaded when planned
        code, out, err = await wacamp("campaigns", "run", "autunno", "--json", env=env, cwd=tmp_path)
        assert code == 0, err
        assert sandbox.sandbox.media.uploads == 1
        report = json.loads(out)
        stats = sandbox.stats()
        assert stats.accepted == report["accepted"] > 900 and stats.duplicates == 0  # 1,000 less no consent

        # A second campaign with the same bytes on the same sender reuses the id: still one upload.
        code, _, err = await wacamp(*_create_args("autunno-bis", picture), env=env, cwd=tmp_path)
        assert code == 0, err
        code, _, err = await wacamp("campaigns", "plan", "autunno-bis", env=env, cwd=tmp_path)
        assert code == 0, err
        assert sandbox.sandbox.media.uploads == 1

    with engine.connect() as conn:
        (media_id,) = conn.execute(sa.select(MEDIA_UPLOAD_TABLE.c.media_id)).scalars().all()
        bodies = (
            conn.execute(sa.select(MESSAGE_TABLE.c.body).where(MESSAGE_TABLE.c.body.is_not(None)))
            .scalars()
            .all()
        )
    assert media_id in sandbox.sandbox.media.items
    headers = {json.dumps(json.loads(b)["template"]["components"][0]) for b in bodies}
    assert headers == {
        json.dumps({"type": "header", "parameters": [{"type": "image", "image": {"id": media_id}}]})
    }


async def test_a_header_file_of_the_wrong_type_or_size_is_refused_before_any_upload(
    migrated: tuple[str, Engine], tmp_path: Path
) -> None:
    url, _ = migrated
    (tmp_path / "contacts.csv").write_text("phone,first_name,city,consent\n+393471234567,A,Roma,yes\n")
    big = tmp_path / "huge.jpg"
    big.write_bytes(b"\xff\xd8" + b"\0" * (5 * 1024 * 1024))
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\0" * 64)
    async with running_sandbox(SandboxConfig()) as sandbox:
        env = {
            **sandbox_env(sandbox.base_url),
            "WACAMP_DATABASE_URL": url,
            "WACAMP_WABA_ID": "200000000000001",
        }
        for args in (["templates", "sync"], ["contacts", "import", "contacts.csv", "--list", "everyone"]):
            assert (await wacamp(*args, env=env, cwd=tmp_path))[0] == 0
        code, _, err = await wacamp(*_create_args("too-big", big), env=env, cwd=tmp_path)
        assert code == 1
        assert f"--header-media-file {big}: 5,242,882 bytes, the IMAGE limit is 5,242,880 bytes" in err
        code, _, err = await wacamp(*_create_args("a-video", clip), env=env, cwd=tmp_path)
        assert code == 1
        assert "type video/mp4 cannot be a IMAGE header (accepted: image/jpeg, image/png)" in err
        assert sandbox.sandbox.media.uploads == 0
