"""Every name that a module of ``tesseract`` or ``simulator`` exports in ``__all__`` resolves."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import simulator
import tesseract


def all_modules() -> list[str]:
    names = []
    for package in (tesseract, simulator):
        names.append(package.__name__)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
            if info.name.rsplit(".", 1)[-1] != "__main__":  # running it would start the command line
                names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", all_modules())
def test_every_exported_name_resolves(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", [])
    missing = [item for item in exported if not hasattr(module, item)]
    assert not missing, f"{name}.__all__ names what it does not have: {missing}"
    assert len(set(exported)) == len(exported), f"{name}.__all__ names something twice"
