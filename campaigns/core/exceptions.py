"""Every error wacamp raises, in one tree.

::

    WacampError                      root of everything wacamp raises on purpose (its `exit_code`)
    ├── UserError                    bad input from a person: one line on stderr, exit 1
    │   ├── ConfigError              a config file or setting is wrong (names file, line, key)
    │   ├── SchemaError              the database schema is missing or behind (names the command to run)
    │   ├── NotFoundError            a campaign, list, template or contact that does not exist
    │   ├── InputFileError           a CSV / JSON file that cannot be read at all (names file, line)
    │   ├── ValidationFailed         several problems found at once (e.g. a campaign definition)
    │   └── LockedError              another process holds the lock or the database: exit 75, try later
    ├── DatabaseUnavailableError     the database stayed unreachable or locked for [database] outage_wait_s:
    │                                exit 75, run again (results not written are kept in the journal)
    └── PlatformError                the WhatsApp platform answered with an error (carries code, title)
        ├── RetryableError           try again later; never recorded as a failure by itself
        │   ├── ThrottledError       130429, 80007, 4, HTTP 429: slow the whole sender down
        │   ├── PairRateLimitedError 131056: that recipient waits 4^X s
        │   ├── MaintenanceError     131057: retry after about a minute
        │   ├── TransientError       131000, 131016, 1, 2, 5xx, connection refused before the request
        │   └── TemplateWarmingError 131009 on the Marketing Messages API: template not synced yet
        ├── PermanentError           retrying cannot help
        │   ├── RecipientError       this recipient only (undeliverable, bad payload, …)
        │   │   ├── MarketingLimitError  131049: defer the recipient ≥ 24 h
        │   │   └── OptedOutError        131050: suppress the contact
        │   ├── CampaignFatalError   template unusable or account restricted: pause the campaign
        │   │   └── MarketingTermsError  131055: Marketing Messages API terms not accepted
        │   └── SenderFatalError     auth, permissions, number not registered, payment: stop everything
        └── OutcomeUnknownError      no answer after the request may have reached the platform

`classify_platform_error` turns an ``error.code`` (never the HTTP status alone) into one of these;
`is_passing_database_trouble` says which database errors a later attempt can get past (a lock held past
the busy timeout, a lost connection, a restart or failover) and which fail at once (a missing table).
None of them knows about the command line: `wacamp.cli.main` prints ``Error: <message>`` on stderr
and exits with the error's `exit_code`.
"""

from __future__ import annotations

from typing import ClassVar

import sqlalchemy.exc

from campaigns.core.exit_codes import ExitCode


class WacampError(Exception):
    """Something went wrong in wacamp."""

    #: What the `wacamp` process exits with when this error ends a command.
    exit_code: ClassVar[ExitCode] = ExitCode.FAILED

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (type(self).__doc__ or "").strip())


class UserError(WacampError):
    """The input given to wacamp is not usable."""


class ConfigError(UserError):
    """The configuration is not valid."""


class SchemaError(UserError):
    """The database schema is missing or out of date: run `wacamp db upgrade`."""


class NotFoundError(UserError):
    """No such object."""


class InputFileError(UserError):
    """The input file cannot be read."""


class ValidationFailed(UserError):
    """The definition has problems."""

    def __init__(self, problems: list[str], *, what: str = "definition") -> None:
        self.problems = list(problems)
        super().__init__(f"{what} refused: " + "; ".join(self.problems))


class LockedError(UserError):
    """Another wacamp process holds the lock."""

    exit_code = ExitCode.LATER


class DatabaseUnavailableError(WacampError):
    """The database did not answer for longer than `[database] outage_wait_s`: run again later."""

    exit_code = ExitCode.LATER


#: SQLite messages of a passing trouble: another process holds the lock, or the disk hiccuped.
_SQLITE_PASSING = ("database is locked", "database table is locked", "database is busy", "disk i/o error")
#: PostgreSQL SQLSTATE classes and codes of a passing trouble: connection lost (08), transaction
#: rolled back by a deadlock or serialization failure (40), too many connections (53), the server
#: shutting down, restarting or in recovery (57P), system I/O (58), a read-only standby after a
#: failover (25006).
_PG_PASSING_CLASSES = ("08", "40", "53", "57P", "58")
_PG_PASSING_CODES = frozenset({"25006", "55P03"})


def is_passing_database_trouble(exc: BaseException) -> bool:
    """True for a database error a later attempt can get past; False for one that fails at once.

    Passing: SQLite locked or busy past its busy timeout, a connection refused, lost or reset, a
    PostgreSQL restart, failover or deadlock, the connection pool exhausted. Not passing: a missing
    table or column, a constraint violation, a syntax error: retrying cannot help.
    """
    if isinstance(exc, sqlalchemy.exc.TimeoutError):  # the pool had no connection to give in time
        return True
    if not isinstance(exc, sqlalchemy.exc.DBAPIError):
        return False
    if exc.connection_invalidated or isinstance(exc, sqlalchemy.exc.InterfaceError):
        return True
    orig = exc.orig
    if "sqlite" in type(orig).__module__:
        text = str(orig).lower()
        return isinstance(exc, sqlalchemy.exc.OperationalError) and any(m in text for m in _SQLITE_PASSING)
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate is None:  # psycopg: no server answer at all (connection refused, timed out)
        return isinstance(exc, sqlalchemy.exc.OperationalError)
    return sqlstate in _PG_PASSING_CODES or sqlstate.startswith(_PG_PASSING_CLASSES)


class PlatformError(WacampError):
    """The WhatsApp platform answered with an error."""

    def __init__(
        self,
        message: str | None = None,
        *,
        code: int | None = None,
        title: str = "",
        http_status: int | None = None,
        details: str = "",
    ) -> None:
        self.code = code
        self.title = title or (message or "")
        self.http_status = http_status
        self.details = details
        label = f"({code}) " if code is not None else ""
        super().__init__(message or f"{label}{self.title}".strip() or None)


class RetryableError(PlatformError):
    """The platform could not take the request now; it may later."""


class ThrottledError(RetryableError):
    """The sender went over a platform rate limit (130429, 80007, 4 or HTTP 429)."""

    def __init__(
        self, message: str | None = None, *, retry_after_s: float | None = None, **kw: object
    ) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message, **kw)  # type: ignore[arg-type]


class PairRateLimitedError(RetryableError):
    """Too many messages to this recipient in a short time (131056)."""


class MaintenanceError(RetryableError):
    """The number is under maintenance, e.g. a throughput upgrade (131057)."""


class TransientError(RetryableError):
    """The platform had a temporary problem (131000, 131016, 1, 2, 5xx)."""


class PermanentError(PlatformError):
    """Retrying this request cannot succeed."""


class RecipientError(PermanentError):
    """This recipient cannot receive this message."""


class MarketingLimitError(RecipientError):
    """The recipient reached the per-user marketing limit (131049)."""


class OptedOutError(RecipientError):
    """The recipient stopped marketing messages (131050)."""


class CampaignFatalError(PermanentError):
    """The campaign cannot go on: its template is unusable or the account is restricted."""


class MarketingTermsError(CampaignFatalError):
    """131055: the business portfolio has not accepted the Marketing Messages API terms (onboarding)."""


class TemplateWarmingError(RetryableError):
    """On the Marketing Messages API, a template just created or idle > 7 days is not synced yet (131009)."""


class SenderFatalError(PermanentError):
    """The sender cannot send at all: authentication, permissions, registration or payment."""


class OutcomeUnknownError(PlatformError):
    """The request may have reached the platform but no answer came back."""


THROTTLE_CODES = frozenset({130429, 80007, 4})
PAIR_RATE_CODES = frozenset({131056})
MAINTENANCE_CODES = frozenset({131057})
TRANSIENT_CODES = frozenset({131000, 131016, 1, 2})
MARKETING_LIMIT_CODES = frozenset({131049})
OPTED_OUT_CODES = frozenset({131050})
RECIPIENT_CODES = frozenset({131026, 130472, 131051, 100, 132000, 132005, 132012, 131047, 470})
TEMPLATE_FATAL_CODES = frozenset({132001, 132007, 132015, 132016})
ACCOUNT_FATAL_CODES = frozenset({131048, 131064, 368, 130497, 131031})
#: Marketing Messages API onboarding not done (terms not accepted); Twilio shows it as 63062.
MARKETING_TERMS_CODES = frozenset({131055})
#: On the Marketing Messages API path only: the template is not synced yet (classified by that provider).
TEMPLATE_WARMING_CODES = frozenset({131009})
SENDER_FATAL_CODES = frozenset({0, 190, 10, 133010, 131042, *range(200, 300)})

_BY_CODE: tuple[tuple[frozenset[int], type[PlatformError]], ...] = (
    (THROTTLE_CODES, ThrottledError),
    (PAIR_RATE_CODES, PairRateLimitedError),
    (MAINTENANCE_CODES, MaintenanceError),
    (TRANSIENT_CODES, TransientError),
    (MARKETING_LIMIT_CODES, MarketingLimitError),
    (OPTED_OUT_CODES, OptedOutError),
    (RECIPIENT_CODES, RecipientError),
    (MARKETING_TERMS_CODES, MarketingTermsError),
    (TEMPLATE_FATAL_CODES, CampaignFatalError),
    (ACCOUNT_FATAL_CODES, CampaignFatalError),
    (SENDER_FATAL_CODES, SenderFatalError),
)


def error_class_for(code: int | None, http_status: int | None = None) -> type[PlatformError]:
    """The exception class for a platform ``error.code``; the HTTP status only breaks ties.

    A code we do not know is a recipient-level permanent error unless the status says the
    server failed (5xx) or throttled (429): an unknown code is never retried forever.
    """
    if code is not None:
        for codes, cls in _BY_CODE:
            if code in codes:
                return cls
    if http_status == 429:
        return ThrottledError
    if http_status is not None and http_status >= 500:
        return TransientError
    return RecipientError


def classify_platform_error(
    *,
    code: int | None,
    title: str = "",
    http_status: int | None = None,
    details: str = "",
    retry_after_s: float | None = None,
) -> PlatformError:
    """Build the right `PlatformError` for an error body the platform returned."""
    cls = error_class_for(code, http_status)
    if cls is ThrottledError:
        return ThrottledError(
            retry_after_s=retry_after_s, code=code, title=title, http_status=http_status, details=details
        )
    return cls(code=code, title=title, http_status=http_status, details=details)
