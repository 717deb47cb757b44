"""Named device profiles for scenario files: what a node computes with, in the simulator's cost model
(virtual seconds per call = overhead + flops / flop rate).

The flop rates are half the vendor's peak fp32 figure (dense kernels of the sizes experts use reach
about that), the overhead a kernel launch and a Python call. Sources: NVIDIA's data sheets (GTX 1080:
8.9 TFLOP/s fp32; T4: 8.1; A100: 19.5) and, for ``cpu``, a 4-core AVX2 desktop (~200 GFLOP/s fp32
peak). A scenario can give explicit figures instead (``device: {flops: 2e12, overhead: 30 us}``).
"""

from __future__ import annotations

from simulator.compute import DeviceProfile

PRESETS: dict[str, DeviceProfile] = {
    "cpu": DeviceProfile(flops_per_s=100e9, overhead_s=20e-6),
    "gtx1080": DeviceProfile(flops_per_s=4.45e12, overhead_s=50e-6),
    "t4": DeviceProfile(flops_per_s=4.05e12, overhead_s=50e-6),
    "a100": DeviceProfile(flops_per_s=9.75e12, overhead_s=30e-6),
}

__all__ = ["PRESETS"]
