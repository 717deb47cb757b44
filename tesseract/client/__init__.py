"""The trainer's side of the swarm: a client session, remote experts and mixture-of-experts layers."""

from tesseract.client.errors import ExpertError, MixtureError
from tesseract.client.expert import RemoteExpert
from tesseract.client.moe import RemoteMixtureOfExperts
from tesseract.client.sequential import RemoteSequential, SequenceError
from tesseract.client.session import Client
from tesseract.client.switch import RemoteSwitchMixtureOfExperts

__all__ = [
    "Client",
    "ExpertError",
    "MixtureError",
    "RemoteExpert",
    "RemoteMixtureOfExperts",
    "RemoteSequential",
    "RemoteSwitchMixtureOfExperts",
    "SequenceError",
]
