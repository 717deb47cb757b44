"""Tensors on the wire: every dtype and shape round-trips, decoding is zero-copy, bad bytes are caught."""

from __future__ import annotations

import msgspec
import pytest
import torch
import trio
from hypothesis import given
from hypothesis import strategies as st

from tesseract.net import RemoteError, RPCClient, RPCServer
from tesseract.net.errors import TensorError
from tesseract.net.framing import FrameDecoder
from tesseract.net.messages import Request, decode_payload, encode_frame, split_body
from tesseract.net.tensors import DTYPES, WireTensor, deserialize_tensor, serialize_tensor
from tests.service import Scale, Tensor, make_router
from tests.worlds import World


class Carrier(msgspec.Struct, tag="carrier"):
    tensors: list[WireTensor]


def through_a_frame(tensors: list[torch.Tensor]) -> tuple[list[torch.Tensor], bytearray]:
    frame = encode_frame(
        Request(1, "m", 1.0), Carrier([serialize_tensor(t) for t in tensors]), max_frame_size=1 << 28
    )
    decoder = FrameDecoder()
    decoder.feed(frame)
    decoded = decoder.next_frame()
    assert decoded is not None
    _, payload = split_body(memoryview(decoded.body), decoded.envelope_size)
    carrier = decode_payload(Carrier, payload)
    return [deserialize_tensor(w) for w in carrier.tensors], decoded.body


def make_tensor(dtype: torch.dtype, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=generator).bool()
    if dtype.is_floating_point or dtype.is_complex:
        return torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)
    info = torch.iinfo(dtype)
    return torch.randint(max(info.min, -1000), min(info.max, 1000), shape, generator=generator, dtype=dtype)


shapes = st.lists(st.integers(0, 5), min_size=0, max_size=4).map(tuple)


@given(
    dtype_name=st.sampled_from(sorted(DTYPES)),
    shape=shapes,
    seed=st.integers(0, 2**16),
    transpose=st.booleans(),
)
def test_every_dtype_and_shape_round_trips(
    dtype_name: str, shape: tuple[int, ...], seed: int, transpose: bool
) -> None:
    tensor = make_tensor(DTYPES[dtype_name], shape, seed)
    if transpose and tensor.dim() >= 2:
        tensor = tensor.transpose(0, 1)  # non-contiguous input
    (decoded,), _ = through_a_frame([tensor])
    assert decoded.dtype == tensor.dtype and decoded.shape == tensor.shape
    assert torch.equal(decoded, tensor)


def test_zero_dim_and_empty_tensors() -> None:
    scalar, empty = torch.tensor(3.5), torch.zeros(0, 7)
    (a, b), _ = through_a_frame([scalar, empty])
    assert a.shape == () and a.item() == 3.5
    assert b.shape == (0, 7)


def test_decoding_does_not_copy_the_tensor_bytes() -> None:
    tensor = torch.randn(256, 256)
    (decoded,), body = through_a_frame([tensor])
    start = memoryview(body).obj  # the frame's own buffer
    address = decoded.data_ptr()
    base = torch.frombuffer(start, dtype=torch.uint8).data_ptr()
    assert base <= address < base + len(body)
    assert torch.equal(decoded, tensor)


def test_gradients_and_graph_do_not_travel() -> None:
    tensor = torch.randn(3, requires_grad=True) * 2
    (decoded,), _ = through_a_frame([tensor])
    assert not decoded.requires_grad and torch.equal(decoded, tensor.detach())


def test_lazy_conjugate_and_negative_views_travel_as_their_values() -> None:
    complex_values = torch.randn(3, dtype=torch.complex64)
    conjugate = complex_values.conj()
    negative = conjugate.imag  # a lazily negated view of the imaginary parts
    assert conjugate.is_conj() and negative.is_neg()
    decoded, _ = through_a_frame([conjugate, negative])
    assert torch.equal(decoded[0], conjugate.resolve_conj()) and torch.equal(decoded[1], negative)


@pytest.mark.parametrize(
    ("dtype", "shape", "nbytes", "match"),
    [
        ("float32", (2, 3), 23, "needs 24 bytes"),
        ("float32", (2, 3), 25, "needs 24 bytes"),
        ("float128", (1,), 16, "unknown dtype"),
        ("int64", (0,), 8, "needs 0 bytes"),
    ],
)
def test_inconsistent_tensors_are_rejected(dtype: str, shape: tuple, nbytes: int, match: str) -> None:
    with pytest.raises(TensorError, match=match):
        deserialize_tensor(WireTensor(dtype, shape, memoryview(bytearray(nbytes))))


def test_negative_or_huge_shapes_fail_validation() -> None:
    encoder = msgspec.msgpack.Encoder()
    for shape in ([-1, 2], [2**41], list(range(1, 20))):
        data = encoder.encode(["float32", shape, b""])
        with pytest.raises(msgspec.ValidationError):
            msgspec.msgpack.decode(data, type=WireTensor)


def test_unsupported_dtype_is_refused_at_serialization() -> None:
    with pytest.raises(TensorError, match="cannot be sent"):
        serialize_tensor(torch.zeros(2, dtype=torch.uint16))


def test_an_empty_tensor_with_huge_dims_is_a_bad_request_at_a_live_server(world: World) -> None:
    """Defect 10: [0, 2**39, 2**39] reached torch ("Stride calculation overflowed": internal)."""

    async def main(world: World) -> None:
        server = await world.new_host()
        world.start(server, RPCServer(server, make_router()).serve)
        await trio.sleep(0.05)
        async with RPCClient(await world.new_host()) as client:
            for shape in ((0, 2**39, 2**39), (2**39, 0, 2**30, 2**30)):
                huge = Scale(WireTensor("float32", shape, memoryview(b"")))
                with pytest.raises(RemoteError) as info:
                    await client.call(server.address, "scale", huge, Tensor, timeout=5)
                assert info.value.code == "bad_request" and "spans more than" in info.value.message
            fine = Scale(WireTensor("float32", (0, 2**20, 2**20), memoryview(b"")))
            reply = await client.call(server.address, "scale", fine, Tensor, timeout=5)
            assert deserialize_tensor(reply.tensor).shape == (0, 2**20, 2**20)

    world.run(main)
