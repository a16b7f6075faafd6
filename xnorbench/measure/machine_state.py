"""The machine's state while a measurement ran: load, stolen time, clock.

These machines are shared: a timing taken while another process held the cores, or
while the hypervisor gave them to another guest (steal time), measures that, not the
code. Each speed row carries what the machine was doing meanwhile, and a busy machine
is flagged on the row and said in one line, so a slow number is never silently a
result. Linux only (``/proc``); elsewhere the fields are None and nothing is flagged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

STEAL_BUSY_PCT = 3.0
"""Steal above this share of the measured interval: the hypervisor took the cores."""


def _cpu_times() -> tuple[int, int] | None:
    """(steal, total) jiffies of all CPUs from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if fields[0] != "cpu" or len(fields) < 9:
        return None
    values = [int(v) for v in fields[1:]]
    return values[7], sum(values[:8])  # guest time is already in user


def _mhz() -> float | None:
    """Mean current clock of the cores (MHz), from /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    mhz = [float(line.split(":")[1]) for line in text.splitlines()
           if line.startswith("cpu MHz")]
    return sum(mhz) / len(mhz) if mhz else None


@dataclass(frozen=True)
class MachineState:
    """Load, steal and clock over one measurement."""

    load1: float | None
    steal_pct: float | None
    mhz: float | None
    cores: int

    @property
    def busy(self) -> str | None:
        """Why the machine counts as busy, or None."""
        why = []
        if self.load1 is not None and self.load1 > self.cores:
            why.append(f"load {self.load1:.1f} on {self.cores} cores")
        if self.steal_pct is not None and self.steal_pct > STEAL_BUSY_PCT:
            why.append(f"{self.steal_pct:.0f} % of the time stolen by the hypervisor")
        return ", ".join(why) or None

    def as_params(self) -> dict[str, object]:
        return {"load1": self.load1, "steal_pct": self.steal_pct, "cpu_mhz": self.mhz,
                "busy": self.busy}


class StateProbe:
    """``probe = StateProbe()`` before a measurement, ``probe.stop()`` after it."""

    def __init__(self) -> None:
        self.start = _cpu_times()

    def stop(self) -> MachineState:
        end = _cpu_times()
        steal = None
        if self.start is not None and end is not None and end[1] > self.start[1]:
            steal = 100.0 * (end[0] - self.start[0]) / (end[1] - self.start[1])
        try:
            load1: float | None = os.getloadavg()[0]
        except OSError:
            load1 = None
        return MachineState(load1, steal, _mhz(), os.cpu_count() or 1)
