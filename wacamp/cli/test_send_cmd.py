"""`wacamp campaigns test`: send a campaign's real body to test numbers now."""

from __future__ import annotations

import asyncio

import click
from sqlalchemy.engine import Engine

from campaigns.contacts.phones import check_region, normalize
from campaigns.control import find_campaign
from campaigns.core.exceptions import UserError
from campaigns.core.models import Campaign
from campaigns.core.settings import Settings
from scheduler.providers.factory import make_provider
from scheduler.sending.test_send import SentTest, send_test_messages
from wacamp.cli.common import AppContext, json_option, pass_app, print_json


@click.command("test")
@click.argument("campaign")
@click.option("--to", "to", multiple=True, metavar="PHONE", help="A test number (repeat for more).")
@click.option(
    "--as",
    "as_phone",
    metavar="CONTACT_PHONE",
    help="Personalised as for this recipient of the campaign (default: its first recipient).",
)
@click.option("--region", help="ISO country code for numbers written without +country.")
@json_option
@pass_app
def test_command(
    app: AppContext,
    campaign: str,
    to: tuple[str, ...],
    as_phone: str | None,
    region: str | None,
    as_json: bool,
) -> None:
    """Send CAMPAIGN's real message to test numbers now, to see it on a phone before the real send.

    The body is the frozen ledger body of one recipient (--as, or the first), with only the number
    changed (and no callback data, so its delivery reports never touch the ledger). It goes through
    the sender's provider and rate limiter, and is recorded apart: it never counts for "never the
    same content twice", frequency caps or the tier budget. `campaigns show` lists test sends.
    Without --to the numbers of [campaigns] test_numbers are used. Exit 1 if any send failed.

    \b
    Examples:
      wacamp campaigns test spring --to +393471234567
      wacamp campaigns test spring --to 3471234567 --to 3479876543 --region IT --as +393331112222
    """
    target = find_campaign(app.engine, campaign)
    region = check_region(region if region is not None else app.settings.contacts.default_region)
    numbers = [normalize(p, region) for p in (to or app.settings.campaigns.test_numbers)]
    recipient = normalize(as_phone, region) if as_phone else None
    results = asyncio.run(_send(app.engine, app.settings, target, numbers, recipient))
    if as_json:
        print_json([_as_dict(r) for r in results])
    else:
        for r in results:
            outcome = f"accepted ({r.wamid})" if r.wamid else f"failed: {r.error}"
            click.echo(f"{r.phone}: {outcome}, as {r.as_phone} receives it")
    if any(r.error for r in results):
        raise UserError(f"{sum(1 for r in results if r.error)} of {len(results)} test sends failed")


async def _send(
    engine: Engine, settings: Settings, campaign: Campaign, numbers: list[str], as_phone: str | None
) -> list[SentTest]:
    provider = make_provider(settings, settings.sender(campaign.sender_name))
    try:
        return await send_test_messages(
            engine, settings=settings, campaign=campaign, provider=provider, to=numbers, as_phone=as_phone
        )
    finally:
        await provider.close()


def _as_dict(result: SentTest) -> dict[str, object]:
    return {
        "to": result.phone,
        "as": result.as_phone,
        "wamid": result.wamid,
        "error": result.error,
        "sent_at": result.sent_at.isoformat(),
    }
