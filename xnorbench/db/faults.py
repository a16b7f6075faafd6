"""Fault injection at exact points of a run, for the tests that prove nothing is lost.

``XNORBENCH_FAULT=SIGNAL@WHERE:METRIC#N`` makes the process send itself ``SIGNAL`` (KILL,
TERM, INT or STOP) at the ``N``-th row (default 1) whose metric is ``METRIC``, at
``WHERE``: ``before`` its transaction, ``commit`` (inside it: the row is written but not
committed) or ``after`` its commit. Several faults may be given, separated by commas.
Example: ``XNORBENCH_FAULT=KILL@after:final_test_accuracy#1`` kills the run right after
the first ``final_test_accuracy`` row is safely stored. Unset, this costs one dict lookup
per row. Real signals, not exceptions, so the test sees what a user's Ctrl-C, ``kill`` or
power cut would leave behind.
"""

from __future__ import annotations

import os
import re
import signal
from collections import Counter
from dataclasses import dataclass

ENV = "XNORBENCH_FAULT"
WHERE = ("before", "commit", "after")
_SPEC = re.compile(r"^(KILL|TERM|INT|STOP)@(before|commit|after):([\w.-]+)(?:#(\d+))?$")


@dataclass(frozen=True)
class Fault:
    signal: str
    where: str
    metric: str
    nth: int


def parse(text: str) -> list[Fault]:
    """The faults ``text`` names; ``ValueError`` with the bad part if one is malformed."""
    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        m = _SPEC.match(part)
        if not m:
            raise ValueError(f"{ENV}: {part!r} is not SIGNAL@WHERE:METRIC#N "
                             f"(SIGNAL: KILL, TERM, INT, STOP; WHERE: {', '.join(WHERE)})")
        out.append(Fault(m[1], m[2], m[3], int(m[4] or 1)))
    return out


_seen: Counter[str] = Counter()


def at_row(where: str, metric: str) -> None:
    """Called by the store around each row commit; fires the fault aimed at this point."""
    text = os.environ.get(ENV)
    if not text:
        return
    if where == "before":
        _seen[metric] += 1
    for f in parse(text):
        if f.where == where and f.metric == metric and _seen[metric] == f.nth:
            os.kill(os.getpid(), getattr(signal, f"SIG{f.signal}"))
