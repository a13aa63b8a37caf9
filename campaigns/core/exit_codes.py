"""The exit codes of every `wacamp` command, in one place (docs/running.md lists them for people).

Cron, systemd and CI read them: 0 done, 1 an error, 2 the command line itself was wrong (click's own
usage errors), 75 try again later (sysexits' EX_TEMPFAIL: another process holds the lock, the database
is busy, a run stopped early and can resume), 130 interrupted (128 + SIGINT: a forced second Ctrl-C).
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """What a `wacamp` process tells its caller when it ends."""

    #: Done: nothing left to do for now.
    OK = 0
    #: An error: bad input, a failed campaign, a defect.
    FAILED = 1
    #: The command line was wrong (unknown command or option); click's own code.
    USAGE = 2
    #: Try later (EX_TEMPFAIL): locked, busy, budget spent, paused, deferred rows, a deadline reached.
    LATER = 75
    #: Interrupted (128 + SIGINT): Ctrl-C before the command could stop cleanly.
    INTERRUPTED = 130
