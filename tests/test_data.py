"""The trainer's data: the bundled digits, and MNIST IDX files checked field by field."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from tesseract.train.data import load_dataset, load_digits, load_mnist, read_idx


def write_idx(path: Path, array: np.ndarray, *, code: int = 0x08, compress: bool = False) -> Path:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def test_the_bundled_digits_are_real_and_split_reproducibly() -> None:
    data = load_digits()
    assert data.train_x.shape == (1438, 64) and data.test_x.shape == (359, 64) and data.classes == 10
    assert (
        data.train_x.dtype == torch.float32
        and 0.0 <= float(data.train_x.min()) <= float(data.train_x.max()) <= 1.0
    )
    assert sorted(torch.cat([data.train_y, data.test_y]).unique().tolist()) == list(range(10))
    again = load_digits()
    assert torch.equal(data.test_y, again.test_y) and not torch.equal(data.test_y, load_digits(seed=1).test_y)


def test_mnist_idx_files_plain_or_gzipped(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for prefix, count, compress in (("train", 6, False), ("t10k", 4, True)):
        write_idx(
            tmp_path / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28)), compress=compress
        )
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, count), compress=compress)
    data = load_dataset(f"mnist:{tmp_path}")
    assert data.train_x.shape == (6, 784) and data.test_x.shape == (4, 784)
    assert float(data.train_x.max()) <= 1.0 and data.train_y.dtype == torch.int64


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "bad magic"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "unsupported IDX element type"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x01", "truncated header"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x03\x05", r"header says \(3,\)"),
        (b"\x00\x00", "bad magic"),
    ],
)
def test_bad_idx_files_get_errors_naming_the_problem(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "bad-idx"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=problem):
        read_idx(path)


def test_mismatched_or_missing_mnist_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 2, 2)))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(2))
    with pytest.raises(ValueError, match="has shape"):
        load_mnist(tmp_path)
    with pytest.raises(ValueError, match="unknown data set"):
        load_dataset("cifar")
