"""The trainer's side of the swarm: a client session, remote experts and mixture-of-experts layers."""

from tesseract.client.errors import ExpertError, MixtureError, SequenceError
from tesseract.client.expert import RemoteExpert
from tesseract.client.moe import RemoteMixtureOfExperts
from tesseract.client.sequential import RemoteSequential
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
