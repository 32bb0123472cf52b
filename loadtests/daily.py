"""Ecosystem traffic shaped as a compressed day, an ASSUMED curve (--peak-users, --day-seconds;
see ofsre.loadtests.profiles).

    locust -f loadtests/daily.py --host URL --headless
"""

import locust  # noqa: F401 - first, so gevent patches the standard library before anything imports ssl

from ofsre.loadtests import suite  # noqa: F401 - the suite's options, thresholds and progress
from ofsre.loadtests.shapes import DailyShape
from ofsre.loadtests.users import Institution, OpenData  # noqa: F401 - the users this locustfile runs


class Shape(DailyShape):
    pass
