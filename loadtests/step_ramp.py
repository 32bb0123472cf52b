"""Ecosystem traffic shaped as users grow in steps (--step-users, --step-seconds, --steps, --hold-seconds).

    locust -f loadtests/step_ramp.py --host URL --headless
"""

import locust  # noqa: F401 - first, so gevent patches the standard library before anything imports ssl

from ofsre.loadtests import suite  # noqa: F401 - the suite's options, thresholds and progress
from ofsre.loadtests.shapes import StepRampShape
from ofsre.loadtests.users import Institution, OpenData  # noqa: F401 - the users this locustfile runs


class Shape(StepRampShape):
    pass
