"""The simulator: Tesseract's real code over a deterministic virtual network in virtual time."""

from simulator.compute import DeviceProfile
from simulator.distributions import Exponential, Fixed, LogNormal, Pareto, Uniform, Weibull
from simulator.host import HostCrashed, SimHost
from simulator.links import LinkProfile
from simulator.network import SimNetwork, SimulationDeadlock, run_simulation

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
