import os
import signal

import pytest
from hypothesis import HealthCheck, settings

from tests.worlds import RealWorld, SimWorld, World

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=50, print_blob=True
)
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")

# Started as a background job (`.ci/run &`, nohup), the suite inherits SIGINT ignored, and so would
# every process a test starts: the Ctrl+C tests would send a signal that nobody takes. A handled
# signal is reset to the default in a child, so taking it here gives each child a Ctrl+C again.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(params=["real", "sim"])
def world(request) -> World:
    """Run the test once over real loopback sockets and once in the simulated network."""
    return RealWorld() if request.param == "real" else SimWorld(seed=7)
