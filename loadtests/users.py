"""The concrete user classes the locustfiles import (weights from the default mix).

A locustfile runs the user classes found in its own namespace, so each imports exactly the
ones it wants from here; ``locust -f loadtests/ecosystem.py Institution`` picks one by name.
"""

from __future__ import annotations

from .journeys import EcosystemUser, OpenDataUser
from .personas import DEFAULT_MIX

__all__ = ["Institution", "OpenData"]


class Institution(EcosystemUser):
    """A receiving institution: account reads, new consents, payments."""

    weight = DEFAULT_MIX.account_reads + DEFAULT_MIX.new_consent + DEFAULT_MIX.payment
    mix_share = "institution"  # --mix sets the weight (ofsre.loadtests.suite)


class OpenData(OpenDataUser):
    """An unauthenticated open-data reader."""

    weight = DEFAULT_MIX.open_data
    mix_share = "open_data"
