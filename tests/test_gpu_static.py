"""The static GPU report's arithmetic: ptxas output parsing and sm_90 occupancy (benchmarks/gpu_static.py)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gpu_static

PTXAS = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'first' for 'sm_90a'
ptxas info    : Function properties for first
    600 bytes stack frame, 608 bytes spill stores, 620 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 600 bytes cumulative stack size
ptxas info    : Compiling entry function 'second' for 'sm_90'
ptxas info    : Function properties for second
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 64 registers, used 1 barriers, 2048 bytes smem, 400 bytes cmem[0]
"""


def test_ptxas_output_is_read_per_function():
    first, second = gpu_static.parse_ptxas(PTXAS)
    assert first == {"function": "first", "registers": 255, "spill_stores": 608, "spill_loads": 620, "stack": 600,
                     "static_shared": 0}  # fmt: skip
    assert (second["registers"], second["spill_stores"], second["static_shared"]) == (64, 0, 2048)


@pytest.mark.parametrize(
    "registers, shared, warps, blocks, limit",
    [
        (64, 0, 8, 4, "registers"),  # 64·32 = 2048 registers per warp: 32 warps, 4 blocks of 8
        (255, 0, 4, 2, "registers"),  # 255 -> 8192 per warp (units of 256): 8 warps, 2 blocks of 4
        (32, 114_688, 4, 2, "shared"),  # 112 KiB + 1 KiB reserved per block: two fit in 228 KiB
        (32, 120_000, 4, 1, "shared"),  # 118 KiB: one
        (16, 0, 1, 32, "blocks"),  # tiny blocks: the 32-block limit
        (16, 0, 32, 2, "warps"),  # 1024-thread blocks: 64 warps
    ],
)
def test_sm90_occupancy_follows_the_limits(registers, shared, warps, blocks, limit):
    result = gpu_static.occupancy(registers, shared, warps)
    assert (result["blocks_per_sm"], result["limited_by"]) == (blocks, limit)
    assert result["occupancy"] == blocks * warps / 64
