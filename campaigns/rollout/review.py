"""A rollout's moves: a stage ends (wait for its review), the review (release, wait longer, pause), and a
person's override.

- `stage_end` (the dispatcher, when nothing is claimable): the released stages are all sent but later
  stages remain. An empty stage is skipped at once; otherwise the campaign waits until the last send of
  the stage + the rollout's wait (``waiting: rollout stage 1 of 3 (2%) under review until 20:45 UTC``).
- `Reviewer.before_pass` (`run-due` and `worker`, before each pass): when the review is due, the
  guardrails judge the stage (`campaigns.rollout.guardrails`): green releases the next stage, red pauses
  the campaign with the reason and the figures, too few status webhooks waits another `wait_s`, up to
  `max_wait_s` after the stage, then pauses saying so.
- `override` (`campaigns resume NAME --override-guardrail`): release the next stage and resume.

Every state change goes through `campaigns.control.change_state`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from campaigns import control
from campaigns.core.db import write_transaction
from campaigns.core.dbtypes import utcnow
from campaigns.core.exceptions import UserError
from campaigns.core.models import CAMPAIGN_TABLE as CAMPAIGN
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.models import Campaign, CampaignState, MessageState
from campaigns.core.settings import Settings
from campaigns.rollout.ab_test import decide, proportions
from campaigns.rollout.guardrails import Judgement, StageFacts, Verdict, judge, sender_baseline, stage_facts
from campaigns.rollout.stages import Rollout, rollout_of, stage_label
from campaigns.rollout.variants import ab_of

S = CampaignState
#: What a review may move: a campaign nobody paused or cancelled meanwhile.
_REVIEWABLE = frozenset({S.PLANNED, S.WAITING, S.RUNNING})
#: States of rows a run holds or is sending (`claimed` where the send protocol has it).
IN_FLIGHT = ("claimed", MessageState.SENDING.value)
#: Prefix of the pause reason a crossed guardrail writes (`campaigns show`, the report, run-due).
GUARDRAIL_PREFIX = "guardrail"


@dataclass(frozen=True)
class StageWait:
    """The released stages are sent: wait until `until` for the review."""

    until: datetime
    message: str


def _unsent_released(conn: Connection, campaign_id: int, stage: int, *, in_flight: bool = True) -> int:
    """Rows of the released stages still planned (or in flight, with `in_flight`)."""
    states = [MessageState.PLANNED.value] + (list(IN_FLIGHT) if in_flight else [])
    query = sa.select(sa.func.count()).where(
        MESSAGE.c.campaign_id == campaign_id, MESSAGE.c.stage <= stage, MESSAGE.c.state.in_(states)
    )
    return int(conn.scalar(query) or 0)


def _release(conn: Connection, campaign_id: int, stage: int, now: datetime) -> None:
    conn.execute(
        sa.update(CAMPAIGN)
        .where(CAMPAIGN.c.id == campaign_id, CAMPAIGN.c.rollout_stage == stage)
        .values(rollout_stage=stage + 1, updated_at=now)
    )


def review_at(rollout: Rollout, last_send_at: datetime) -> datetime:
    """When a stage whose last send started at `last_send_at` is judged."""
    return last_send_at + timedelta(seconds=rollout.wait_s)


def stage_end(conn: Connection, campaign_id: int, *, now: datetime) -> StageWait | None:
    """Nothing is claimable: None when the campaign is done (or an empty stage was skipped), else the wait."""
    campaign = control.find_campaign(conn, campaign_id)
    rollout, stage = rollout_of(campaign), campaign.rollout_stage
    while rollout is not None and stage is not None and stage < rollout.last_stage:
        if _unsent_released(conn, campaign_id, stage, in_flight=False):
            return None
        last = stage_facts(conn, campaign, stage).last_send_at
        if last is not None:
            until = review_at(rollout, last)
            return StageWait(
                until, f"rollout {stage_label(stage, rollout)} under review until {until:%H:%M} UTC"
            )
        if _undecided(campaign):  # an empty A/B test stage: decided (the default) by the next run-due
            return StageWait(now, "A/B test stage has no recipients: the default variant is decided next")
        _release(conn, campaign_id, stage, now)  # nobody in this stage: nothing to judge
        stage += 1
    return None


class Step(enum.StrEnum):
    """What the review said before a pass."""

    SEND = "send"  # run the pass (nothing to judge, or the next stage was released)
    WAIT = "wait"  # the review is not due, or too few webhooks: waiting
    PAUSED = "paused"  # a guardrail is crossed (or too few webhooks for too long)


@dataclass(frozen=True)
class ReviewStep:
    """The review's answer and the line that tells it."""

    step: Step
    outcome: str = ""
    judgement: Judgement | None = None
    #: An A/B test was just decided: plan the rest (with the winner) before the pass.
    replan: bool = False


class Reviewer:
    """Judges rollout stages before `run-due`/`worker` passes, with the [rollout] and [limits] settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def before_pass(self, engine: Engine, campaign_id: int, *, now: datetime) -> ReviewStep:
        """Keep the baseline, then judge the stage when its review is due (see the module's text)."""
        if rollout_of(control.find_campaign(engine, campaign_id)) is None:
            return ReviewStep(Step.SEND)  # no rollout: no write transaction either
        with write_transaction(engine) as conn:
            campaign = control.find_campaign(conn, campaign_id)
            rollout = rollout_of(campaign)
            if rollout is None or campaign.rollout_stage is None:
                return ReviewStep(Step.SEND)
            if rollout.baseline is None:
                rollout = _keep_baseline(conn, campaign, rollout)
            return self._review(conn, campaign, rollout, now=now)

    def _review(self, conn: Connection, campaign: Campaign, rollout: Rollout, *, now: datetime) -> ReviewStep:
        assert campaign.id is not None and campaign.rollout_stage is not None
        stage = campaign.rollout_stage
        if stage >= rollout.last_stage or _unsent_released(conn, campaign.id, stage):
            return ReviewStep(Step.SEND, replan=_rest_to_plan(campaign))
        facts = stage_facts(conn, campaign, stage)
        if facts.last_send_at is None:
            if _undecided(campaign):  # an A/B test nobody was drawn for: the default, for lack of data
                return self._decide(conn, campaign, facts, now=now)
            return ReviewStep(Step.SEND)  # the dispatcher skips an empty stage
        due_at = review_at(rollout, facts.last_send_at)
        if now < due_at:
            return self._wait(conn, campaign, due_at, f"{stage_label(stage, rollout)} under review", now)
        judgement = judge(facts, rollout, settings=self.settings.rollout, limits=self.settings.limits)
        return self._act(conn, campaign, rollout, facts, judgement, now=now)

    def _act(
        self,
        conn: Connection,
        campaign: Campaign,
        rollout: Rollout,
        facts: StageFacts,
        judgement: Judgement,
        *,
        now: datetime,
    ) -> ReviewStep:
        assert campaign.id is not None and facts.last_send_at is not None
        label = stage_label(facts.stage, rollout)
        if judgement.verdict is Verdict.GREEN:
            if _undecided(campaign):
                return self._decide(conn, campaign, facts, now=now)
            _release(conn, campaign.id, facts.stage, now)
            return ReviewStep(Step.SEND, f"rollout {label} green: {judgement.summary()}", judgement)
        if judgement.verdict is Verdict.RED:
            reason = f"{GUARDRAIL_PREFIX}: rollout {label}: {judgement.summary()}"
            return self._pause(conn, campaign, reason, judgement, now)
        give_up_at = facts.last_send_at + timedelta(
            seconds=rollout.threshold("max_wait_s", self.settings.rollout)
        )
        heard = f"{judgement.heard_share:.0%} of {facts.sends} sends have a status webhook"
        if now >= give_up_at:
            reason = f"{GUARDRAIL_PREFIX}: rollout {label}: too few status webhooks to judge it: {heard}"
            return self._pause(conn, campaign, reason, judgement, now)
        until = min(now + timedelta(seconds=rollout.wait_s), give_up_at)
        return self._wait(conn, campaign, until, f"{label}: too few webhooks ({heard}), waiting", now)

    @staticmethod
    def _decide(conn: Connection, campaign: Campaign, facts: StageFacts, *, now: datetime) -> ReviewStep:
        """The A/B test is over: store the decision, release the rest (planned with the winner)."""
        assert campaign.id is not None
        summary = decide_test(conn, campaign, stage=facts.stage)
        _release(conn, campaign.id, facts.stage, now)
        return ReviewStep(Step.SEND, summary, replan=True)

    @staticmethod
    def _wait(conn: Connection, campaign: Campaign, until: datetime, what: str, now: datetime) -> ReviewStep:
        assert campaign.id is not None
        control.change_state(conn, campaign.id, S.WAITING, now=now, resume_after=until, only_from=_REVIEWABLE)
        return ReviewStep(Step.WAIT, f"rollout {what} until {until:%H:%M} UTC")

    @staticmethod
    def _pause(
        conn: Connection, campaign: Campaign, reason: str, judgement: Judgement, now: datetime
    ) -> ReviewStep:
        assert campaign.id is not None
        control.change_state(
            conn, campaign.id, S.PAUSED, now=now, pause_reason=reason[:500], only_from=_REVIEWABLE
        )
        return ReviewStep(Step.PAUSED, reason, judgement)


def _undecided(campaign: Campaign) -> bool:
    """An A/B test with a test share whose winner is not decided yet."""
    ab = ab_of(campaign)
    return ab is not None and ab.test_share is not None and ab.decision is None


def decide_test(conn: Connection, campaign: Campaign, *, stage: int) -> str:
    """Decide a campaign's A/B test on its test stage's messages and store the decision; its summary."""
    ab = ab_of(campaign)
    assert ab is not None and campaign.id is not None
    decision = decide(proportions(conn, campaign, ab, stage=stage), ab)
    data = {**ab.as_json(), "decision": decision.as_json()}
    conn.execute(sa.update(CAMPAIGN).where(CAMPAIGN.c.id == campaign.id).values(ab=data))
    return decision.summary()


def _rest_to_plan(campaign: Campaign) -> bool:
    """A decided A/B test: plan its rest before every pass (planning adds only who is missing, so a
    run killed while planning it loses nobody)."""
    ab = ab_of(campaign)
    return ab is not None and ab.test_share is not None and ab.decision is not None


def _keep_baseline(conn: Connection, campaign: Campaign, rollout: Rollout) -> Rollout:
    """The sender's quality and limit when the rollout begins, kept to judge a downgrade later."""
    data = {**rollout.as_json(), "baseline": sender_baseline(conn, campaign.sender_name)}
    conn.execute(sa.update(CAMPAIGN).where(CAMPAIGN.c.id == campaign.id).values(rollout=data))
    return Rollout.of(data)


def override(engine: Engine, name_or_id: str) -> control.CampaignRef:
    """`campaigns resume NAME --override-guardrail`: release the next stage and make the campaign runnable."""
    with write_transaction(engine) as conn:
        campaign = control.find_campaign(conn, name_or_id)
        rollout = rollout_of(campaign)
        if rollout is None or campaign.rollout_stage is None:
            raise UserError(
                f"campaign {campaign.name!r} has no rollout: resume it without --override-guardrail"
            )
        assert campaign.id is not None
        if campaign.state not in (S.PAUSED, S.WAITING):
            raise control.IllegalTransition(
                name=campaign.name,
                current=campaign.state,
                target=S.PLANNED,
                refusal="campaign {name!r} is {state}, not paused or waiting: nothing to override",
            )
        if _undecided(campaign):  # the test is cut short: decided on what it has (run-due plans the rest)
            decide_test(conn, campaign, stage=campaign.rollout_stage)
        if campaign.rollout_stage < rollout.last_stage:
            _release(conn, campaign.id, campaign.rollout_stage, utcnow())
    return control.resume(engine, name_or_id)


def describe(conn: Connection, campaign: Campaign, *, now: datetime) -> dict[str, object] | None:
    """For `campaigns show` and the report: the stages, the current one and what it waits for."""
    rollout = rollout_of(campaign)
    if rollout is None or campaign.rollout_stage is None or campaign.id is None:
        return None
    stage = campaign.rollout_stage
    return {
        "stages": [f"{share * 100:g}%" for share in rollout.shares],
        "wait_s": rollout.wait_s,
        "current_stage": stage + 1,
        "current": stage_label(stage, rollout),
        "waiting_for": _waiting_for(conn, campaign, rollout, now=now),
        "guardrail_overrides": dict(rollout.guardrails),
    }


def _waiting_for(conn: Connection, campaign: Campaign, rollout: Rollout, *, now: datetime) -> str:
    assert campaign.id is not None and campaign.rollout_stage is not None
    stage = campaign.rollout_stage
    if campaign.state == S.PAUSED:
        return (
            f"a person: paused ({campaign.pause_reason}); `campaigns resume` judges the stage again, "
            "`campaigns resume --override-guardrail` goes on"
        )
    if campaign.state in (S.COMPLETED, S.CANCELLED):
        return "nothing: the campaign is " + campaign.state
    if stage >= rollout.last_stage or _unsent_released(conn, campaign.id, stage):
        return f"sending {stage_label(stage, rollout)}"
    when = campaign.resume_after
    if when is not None and when > now:
        return f"{stage_label(stage, rollout)} under review until {when:%Y-%m-%d %H:%M:%S} UTC"
    return f"{stage_label(stage, rollout)} under review: due, the next run-due judges it"
