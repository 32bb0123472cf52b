"""Ecosystem traffic, closed model: ``locust -f loadtests/ecosystem.py --host URL -u 20 -r 5 -t 2m``.

Receiving institutions run the journey mix (:mod:`ofsre.loadtests.journeys`); an
:class:`OpenData` share reads open data without a certificate. Users, spawn rate and run time
are Locust's own ``-u``/``-r``/``-t``; the shape locustfiles beside this one drive them instead.
"""

import locust  # noqa: F401 - first, so gevent patches the standard library before anything imports ssl

from ofsre.loadtests import suite  # noqa: F401 - the suite's options, thresholds and progress
from ofsre.loadtests.users import Institution, OpenData  # noqa: F401 - the users this locustfile runs
