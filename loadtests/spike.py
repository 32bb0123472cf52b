"""Ecosystem traffic shaped as a sudden ×5 spike (--base-users, --spike-factor, --spike-after,
--spike-seconds, --recovery-seconds).

    locust -f loadtests/spike.py --host URL --headless
"""

import locust  # noqa: F401 - first, so gevent patches the standard library before anything imports ssl

from ofsre.loadtests import suite  # noqa: F401 - the suite's options, thresholds and progress
from ofsre.loadtests.shapes import SpikeShape
from ofsre.loadtests.users import Institution, OpenData  # noqa: F401 - the users this locustfile runs


class Shape(SpikeShape):
    pass
