"""Peak FP32 FLOP/s and memory bandwidth of the device a benchmark runs on: the denominator of every limit.

CPU: cores x clock x FP32 FLOPs per cycle per core. The clock is the nominal one (BogoMIPS / 2 on x86; turbo
is ignored, so the true peak may be up to ~40% higher). FLOPs per cycle assume two FMA pipes per core, as on
Zen 3/4 and Intel cores since Haswell: 2 pipes x (SIMD width / 32 bits) lanes x 2 (an FMA is two FLOPs), i.e.
32 with AVX2+FMA and 64 with AVX-512. Memory bandwidth is not measurable from here without a stream test, so a
conservative 20 GB/s per socket share is assumed for a VM (stated in the output).

GPU: a table of datasheet figures (FP32 non-tensor FLOP/s, HBM bandwidth) by device name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

GPU_TABLE: dict[str, tuple[float, float]] = {  # name fragment -> (FP32 FLOP/s, bytes/s), datasheet figures
    "H200": (67e12, 4.8e12),
    "H100 PCIe": (51e12, 2.0e12),
    "H100": (67e12, 3.35e12),  # SXM
    "A100": (19.5e12, 2.0e12),
    "L4": (30.3e12, 0.3e12),
    "A10": (31.2e12, 0.6e12),
}
CPU_BANDWIDTH_ASSUMED = 20e9


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_ghz() -> float:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.lower().startswith("bogomips"):
            return float(line.split(":", 1)[1]) / 2 / 1000
    return 2.0


def cpu_peak(cores: int | None = None) -> dict[str, Any]:
    flags = cpu_flags()
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 8 if "avx" in flags else 4
    fma = 2 if "fma" in flags or "avx512f" in flags else 1
    per_cycle = 2 * lanes * fma  # two pipes x lanes x (2 for an FMA)
    cores = cores or len(os.sched_getaffinity(0))
    ghz = cpu_ghz()
    return {
        "flops": cores * ghz * 1e9 * per_cycle,
        "bytes_per_s": CPU_BANDWIDTH_ASSUMED,
        "how": f"{cores} cores x {ghz:.2f} GHz (nominal) x {per_cycle} FP32 FLOP/cycle "
        f"({'AVX-512' if lanes == 16 else 'AVX2' if lanes == 8 else 'SSE'}"
        f"{'+FMA' if fma == 2 else ''}, 2 pipes); memory {CPU_BANDWIDTH_ASSUMED / 1e9:g} GB/s assumed",
    }


def gpu_peak(device: torch.device) -> dict[str, Any]:
    name = torch.cuda.get_device_name(device)
    for fragment, (flops, bandwidth) in GPU_TABLE.items():
        if fragment in name:
            return {
                "flops": flops,
                "bytes_per_s": bandwidth,
                "how": f"{name}: datasheet FP32 (non-tensor) {flops / 1e12:g} TFLOP/s, "
                f"{bandwidth / 1e12:g} TB/s",
            }
    return {"flops": None, "bytes_per_s": None, "how": f"{name}: not in the datasheet table"}


def device_peak(device: torch.device) -> dict[str, Any]:
    return gpu_peak(device) if device.type == "cuda" else cpu_peak()
