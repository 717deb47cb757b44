"""The simulator: Tesseract's real code over a deterministic virtual network in virtual time."""

from simulator.distributions import Exponential, Fixed, LogNormal, Pareto, Uniform, Weibull
from simulator.host import DeviceProfile, HostCrashed, SimHost
from simulator.network import LinkProfile, SimNetwork, SimulationDeadlock, run_simulation

__all__ = [
    "DeviceProfile",
    "Exponential",
    "Fixed",
    "HostCrashed",
    "LinkProfile",
    "LogNormal",
    "Pareto",
    "SimHost",
    "SimNetwork",
    "SimulationDeadlock",
    "Uniform",
    "Weibull",
    "run_simulation",
]
