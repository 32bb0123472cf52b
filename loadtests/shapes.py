"""Locust shapes over the pure profiles of :mod:`.profiles` (import after ``locust``).

Each class is abstract here so importing this module adds no shape to a locustfile; the
locustfiles (``step_ramp.py``, ``spike.py``, ``soak.py``, ``daily.py``, ``arrival_rate.py``)
subclass the one they run. Parameters are the suite's options (:mod:`.suite`), read when the
test starts, so ``locust -f loadtests/spike.py --base-users 4 --spike-factor 5`` works, in
the web UI too.
"""

from __future__ import annotations

from locust import LoadTestShape

from . import profiles

__all__ = ["ProfileShape", "StepRampShape", "SpikeShape", "SoakShape", "DailyShape", "ArrivalRateShape"]


class ProfileShape(LoadTestShape):
    """A shape that follows ``profile(options).at(run_time)``; ``None`` ends the test."""

    abstract = True

    def profile(self, options):  # pragma: no cover - each subclass gives one
        raise NotImplementedError

    def tick(self):
        if getattr(self, "_profile", None) is None:
            self._profile = self.profile(self.runner.environment.parsed_options)
        users = self._profile.at(self.get_run_time())
        if users is None:
            return None
        return int(users), float(self.runner.environment.parsed_options.shape_spawn_rate)


class StepRampShape(ProfileShape):
    abstract = True

    def profile(self, o):
        return profiles.StepRamp(o.step_users, o.step_seconds, o.steps, o.hold_seconds)


class SpikeShape(ProfileShape):
    abstract = True

    def profile(self, o):
        return profiles.Spike(o.base_users, o.spike_factor, o.spike_after, o.spike_seconds,
                              o.recovery_seconds)


class SoakShape(ProfileShape):
    abstract = True

    def profile(self, o):
        return profiles.Soak(o.soak_users, o.soak_seconds)


class DailyShape(ProfileShape):
    abstract = True

    def profile(self, o):
        return profiles.DailyCurve(o.peak_users, o.day_seconds)


class ArrivalRateShape(LoadTestShape):
    """Keeps ``--arrival-engines`` arrival engines running until the stages end; the engines'
    rate follows the stages (the user class's ``rate_function``)."""

    abstract = True

    def tick(self):
        o = self.runner.environment.parsed_options
        if getattr(self, "_stages", None) is None:
            self._stages = profiles.ArrivalStages.parse(o.arrival_stages)
        if self._stages.at(self.get_run_time()) is None:
            return None
        return int(o.arrival_engines), float(o.arrival_engines)
