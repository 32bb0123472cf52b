"""Ecosystem traffic, open model: journeys start at a fixed, ramping rate (locust#646).

    locust -f loadtests/arrival_rate.py --host URL --headless --arrival-stages 30s:5,60s:20,30s:0

Latency does not slow the offered load down: arrivals that find every journey slot busy are
counted as ``dropped iterations`` (k6's ``dropped_iterations``). See
:class:`ofsre.loadtests.journeys.ArrivalRateUser`.
"""

import locust  # noqa: F401 - first, so gevent patches the standard library before anything imports ssl

from ofsre.loadtests import suite  # noqa: F401 - the suite's options, thresholds and progress
from ofsre.loadtests.journeys import ArrivalRateUser
from ofsre.loadtests.profiles import ArrivalStages
from ofsre.loadtests.shapes import ArrivalRateShape


class Arrivals(ArrivalRateUser):
    @staticmethod
    def rate_function(t: float) -> float:
        stages = Arrivals._stages
        if stages is None:
            return 0.0
        return stages.at(t) or 0.0

    _stages: ArrivalStages | None = None

    def on_start(self) -> None:
        if Arrivals._stages is None:
            Arrivals._stages = ArrivalStages.parse(self.environment.parsed_options.arrival_stages)
        super().on_start()


class Shape(ArrivalRateShape):
    pass
