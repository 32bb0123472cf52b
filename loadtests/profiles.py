"""Load profiles as pure functions of the run time: what the shapes of :mod:`.shapes` follow.

Nothing here imports locust, so the profiles are tested (and plotted) on plain numbers. Each
profile answers ``at(t)`` with the target at ``t`` seconds into the run — users for a closed
model, journeys per second for the open model — or ``None`` once the run is over::

    StepRamp(step_users=10, step_seconds=30, steps=4).at(65)     # 30 (third step)
    Spike(base_users=10, factor=5, after=60, seconds=30).at(70)  # 50
    DailyCurve(peak_users=50, day_seconds=600).at(300)           # the load of 12:00, compressed
    ArrivalStages.parse("30s:5,60s:20,30s:0").at(60)             # 12.5 journeys/s, ramping

**The daily curve is an assumption.** No daily traffic shape of the Open Finance Brasil
ecosystem is published (openfinance.md §7); :data:`HOURLY_SHARE` is a business-hours curve
for Brazil (night trough 02–05 h, morning ramp, peaks late morning and mid-afternoon, an
evening shoulder), each hour's load relative to the peak, compressed so a whole day takes
``day_seconds``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["StepRamp", "Spike", "Soak", "DailyCurve", "ArrivalStages", "HOURLY_SHARE", "parse_duration"]

# Load of each hour 00..23 relative to the peak hour (assumption, see the module docstring).
HOURLY_SHARE = (0.18, 0.12, 0.08, 0.06, 0.06, 0.08, 0.15, 0.30, 0.55, 0.80, 0.95, 1.00,
                0.90, 0.88, 0.95, 1.00, 0.92, 0.80, 0.65, 0.55, 0.50, 0.42, 0.32, 0.24)


def parse_duration(text: str) -> float:
    """``"90"``, ``"90s"``, ``"2m"``, ``"1h30m"`` → seconds."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r} (e.g. 90, 90s, 2m, 1h30m)")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


@dataclass(frozen=True)
class StepRamp:
    """``steps`` steps of ``step_users`` more users, each held ``step_seconds``; then ``hold``."""

    step_users: int = 10
    step_seconds: float = 30
    steps: int = 5
    hold_seconds: float = 0

    def at(self, t: float) -> int | None:
        if t >= self.duration:
            return None
        return self.step_users * min(self.steps, int(t // self.step_seconds) + 1)

    @property
    def duration(self) -> float:
        return self.step_seconds * self.steps + self.hold_seconds


@dataclass(frozen=True)
class Spike:
    """``base_users``, then suddenly ``factor`` × as many for ``seconds``, then base again."""

    base_users: int = 10
    factor: float = 5.0
    after: float = 60
    seconds: float = 60
    recovery_seconds: float = 60

    def at(self, t: float) -> int | None:
        if t >= self.duration:
            return None
        if self.after <= t < self.after + self.seconds:
            return int(round(self.base_users * self.factor))
        return self.base_users

    @property
    def duration(self) -> float:
        return self.after + self.seconds + self.recovery_seconds


@dataclass(frozen=True)
class Soak:
    """A steady ``users`` for ``seconds`` after a linear ramp of ``ramp_seconds``."""

    users: int = 20
    seconds: float = 3600
    ramp_seconds: float = 60

    def at(self, t: float) -> int | None:
        if t >= self.ramp_seconds + self.seconds:
            return None
        if t < self.ramp_seconds:
            return max(1, int(math.ceil(self.users * t / self.ramp_seconds)))
        return self.users

    @property
    def duration(self) -> float:
        return self.ramp_seconds + self.seconds


@dataclass(frozen=True)
class DailyCurve:
    """A day of :data:`HOURLY_SHARE` × ``peak_users`` compressed into ``day_seconds``
    (linear between hours), starting at ``start_hour``."""

    peak_users: int = 50
    day_seconds: float = 600
    start_hour: float = 0

    def at(self, t: float) -> int | None:
        if t >= self.day_seconds:
            return None
        hour = (self.start_hour + 24 * t / self.day_seconds) % 24
        low = int(hour)
        frac = hour - low
        share = HOURLY_SHARE[low] * (1 - frac) + HOURLY_SHARE[(low + 1) % 24] * frac
        return max(1, int(round(self.peak_users * share)))

    @property
    def duration(self) -> float:
        return self.day_seconds


@dataclass(frozen=True)
class ArrivalStages:
    """k6's ``ramping-arrival-rate``: stages of (duration, target rate), linear from the previous
    target (``start_rate`` before the first stage); journeys per second."""

    stages: tuple[tuple[float, float], ...]
    start_rate: float = 0.0

    @classmethod
    def parse(cls, text: str, start_rate: float = 0.0) -> ArrivalStages:
        """``"30s:5,60s:20,30s:0"`` → ramp to 5/s in 30 s, to 20/s in 60 s, down to 0 in 30 s."""
        stages = []
        for part in text.split(","):
            duration, sep, rate = part.strip().partition(":")
            if not sep:
                raise ValueError(f"arrival stage {part!r} must be DURATION:RATE (e.g. 30s:10)")
            stages.append((parse_duration(duration), float(rate)))
        if not stages:
            raise ValueError("no arrival stage given")
        return cls(tuple(stages), start_rate)

    def at(self, t: float) -> float | None:
        begin, previous = 0.0, self.start_rate
        for duration, target in self.stages:
            if t < begin + duration:
                frac = (t - begin) / duration if duration else 1.0
                return previous + (target - previous) * frac
            begin, previous = begin + duration, target
        return None

    @property
    def duration(self) -> float:
        return sum(d for d, _ in self.stages)
