import os

import pytest
from hypothesis import HealthCheck, settings

from tests.worlds import RealWorld, SimWorld, World

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=50, print_blob=True
)
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture(params=["real", "sim"])
def world(request) -> World:
    """Run the test once over real loopback sockets and once in the simulated network."""
    return RealWorld() if request.param == "real" else SimWorld(seed=7)
