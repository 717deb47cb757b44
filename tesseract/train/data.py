"""Data sets for the trainer: the bundled digits, MNIST from IDX files a user already has, and
random samples for measuring throughput.

Every loader returns float32 features scaled to [0, 1] (one row per sample) and int64 labels. IDX
files are parsed by hand, with every header field checked: they may come from anywhere.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

DIGITS = Path(__file__).resolve().parent.parent / "data" / "digits.csv.gz"
#: IDX element types by their code in the header; MNIST uses unsigned bytes.
_IDX_TYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
}
_MAX_IDX_BYTES = 1 << 31


class Dataset(NamedTuple):
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: int

    @property
    def features(self) -> int:
        return self.train_x.shape[1]


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """The 1,797 8x8 digits, shuffled with ``seed`` and split into train and test."""
    with gzip.open(DIGITS, "rt") as file:
        table = np.loadtxt(file, delimiter=",", dtype=np.float32)
    features = torch.from_numpy(table[:, :-1] / 16.0)
    labels = torch.from_numpy(table[:, -1].astype(np.int64))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    test_count = round(len(labels) * test_fraction)
    test, train = order[:test_count], order[test_count:]
    return Dataset(features[train], labels[train], features[test], labels[test], 10)


def load_synthetic(samples: int = 1 << 16, features: int = 64, classes: int = 10, seed: int = 0) -> Dataset:
    """Random features and labels, for throughput (the paper's benchmark feeds random inputs too).
    There is nothing to learn, so no test split: a trainer on it runs no test passes, which would
    only cost time (a chain of 224 blocks, a forward through all of them per test batch)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(samples, features, generator=generator)
    y = torch.randint(0, classes, (samples,), generator=generator)
    return Dataset(x, y, x[:0], y[:0], classes)


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (plain or .gz) as an array; ``ValueError`` naming the problem for a bad file."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as file:
        data = file.read(_MAX_IDX_BYTES + 1)
    if len(data) > _MAX_IDX_BYTES:
        raise ValueError(f"{path}: larger than {_MAX_IDX_BYTES} bytes")
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    dtype = _IDX_TYPES.get(data[2])
    rank = data[3]
    if dtype is None or not 1 <= rank <= 4:
        raise ValueError(f"{path}: unsupported IDX element type 0x{data[2]:02x} or rank {rank}")
    header = 4 + 4 * rank
    if len(data) < header:
        raise ValueError(f"{path}: truncated header")
    shape = struct.unpack(f">{rank}I", data[4:header])
    expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if len(data) - header != expected:
        raise ValueError(f"{path}: header says {shape} ({expected} bytes), file has {len(data) - header}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def load_mnist(directory: str | Path) -> Dataset:
    """MNIST from the four standard IDX files (``train-images-idx3-ubyte`` etc., optionally .gz)."""
    directory = Path(directory)

    def find(stem: str) -> Path:
        for name in (stem, f"{stem}.gz"):
            if (directory / name).exists():
                return directory / name
        raise FileNotFoundError(f"{directory}: no {stem} (or {stem}.gz)")

    def pair(images: str, labels: str) -> tuple[torch.Tensor, torch.Tensor]:
        x = read_idx(find(images))
        y = read_idx(find(labels))
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(f"{directory}: {images} has shape {x.shape}, {labels} has shape {y.shape}")
        if y.max(initial=0) > 9:
            raise ValueError(f"{directory}: {labels} has labels above 9")
        flat = torch.from_numpy(x.reshape(len(x), -1).astype(np.float32) / 255.0)
        return flat, torch.from_numpy(y.astype(np.int64))

    train_x, train_y = pair("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
    test_x, test_y = pair("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    return Dataset(train_x, train_y, test_x, test_y, 10)


def load_dataset(name: str, seed: int = 0) -> Dataset:
    """``digits`` (bundled), ``synthetic`` (random, for throughput) or ``mnist:DIRECTORY``."""
    if name == "digits":
        return load_digits(seed=seed)
    if name == "synthetic":
        return load_synthetic(seed=seed)
    if name.startswith("mnist:"):
        return load_mnist(name.partition(":")[2])
    raise ValueError(f"unknown data set {name!r}: use 'digits', 'synthetic' or 'mnist:DIRECTORY'")
