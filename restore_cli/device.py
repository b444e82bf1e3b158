"""Choosing the device and dtype, and making per-image generators."""

from __future__ import annotations

import gc
import os
import platform
import subprocess
import sys
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .errors import UsageError
from .tiling import Budget

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto``: CUDA, then Apple MPS, then the CPU. Explicit devices are checked to exist."""
    if isinstance(name, torch.device):
        name = str(name)
    name = name.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(
            f"unknown device '{name}'", "use auto, cpu, cuda, cuda:N or mps", option="device"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("CUDA is not available here", "use the cpu (or auto)", option="device")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise UsageError(
                f"no CUDA device {index} (found {torch.cuda.device_count()})",
                "pick one of the listed devices (`restore info`)",
                option="device",
            )
    elif device.type == "mps" and not _mps_available():
        raise UsageError(
            "Apple MPS is not available here", "use the cpu (or auto)", option="device"
        )
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(
            f"unsupported device '{name}'", "use auto, cpu, cuda, cuda:N or mps", option="device"
        )
    return device


def resolve_dtype(
    name: str | torch.dtype,
    device: torch.device,
    on_warning: Callable[[str], None] | None = None,
) -> torch.dtype:
    """``auto``: fp16 on CUDA (as the reference runs), fp32 elsewhere.

    On the CPU, reduced precision is only used where the processor computes it natively (bf16:
    AVX-512 BF16 or AMX; fp16: AMX-FP16; see :func:`cpu_native`): emulated, a bf16
    convolution runs about 200x slower than fp32. Asking for it there falls back to fp32 with a
    warning through ``on_warning`` (default :func:`warnings.warn`). ``auto`` never picks it on the CPU:
    on a Xeon with AMX-BF16, bf16 ran a 64x64 x4 image 2.6-2.8x faster than fp32 but at 29.8 dB
    PSNR from the fp32 result (filled reference weights, ``benchmarks/precision.py``): a visible
    change from the model as published, so it is the user's choice (``--dtype bf16``).
    """
    if isinstance(name, torch.dtype):
        dtype = name
    elif name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    elif name in DTYPES:
        dtype = DTYPES[name]
    else:
        raise UsageError(f"unknown dtype '{name}'", "use auto, fp32, fp16 or bf16", option="dtype")
    if dtype not in DTYPES.values():
        raise UsageError(f"unsupported dtype {dtype}", "use fp32, fp16 or bf16", option="dtype")
    if device.type == "cpu" and dtype != torch.float32 and not cpu_native(dtype):
        why = (
            "no native bf16 arithmetic (emulated it is about 200x slower)"
            if dtype == torch.bfloat16
            else "no native fp16 matrix units (AMX-FP16; without them fp16 is slower than fp32)"
        )
        (on_warning or _warn)(f"this CPU has {why}; running in fp32")
        return torch.float32
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise UsageError("this GPU has no bf16 support", "use fp16 or fp32", option="dtype")
    return dtype


def cpu_flags() -> frozenset[str]:
    """The processor's feature flags (Linux ``/proc/cpuinfo``; macOS ``sysctl`` on Apple silicon)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    if sys.platform == "darwin" and platform.machine() == "arm64":
        flags = set()
        for feature, flag in (("FEAT_BF16", "bf16"), ("FEAT_FP16", "fphp")):
            try:
                out = subprocess.run(
                    ["sysctl", "-n", f"hw.optional.arm.{feature}"],
                    capture_output=True, text=True, timeout=2, check=False,
                )  # fmt: skip
            except (OSError, subprocess.SubprocessError):
                continue
            if out.stdout.strip() == "1":
                flags.add(flag)
        return frozenset(flags)
    return frozenset()


def cpu_native(dtype: torch.dtype, flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU computes ``dtype`` natively (fp32 always)."""
    flags = cpu_flags() if flags is None else flags
    if dtype == torch.bfloat16:
        return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    if dtype == torch.float16:
        # AVX-512 FP16 alone does not count: on a Xeon with it (and AMX-BF16, no AMX-FP16) a
        # 64x64 x4 image took 7.7-8.3 s in fp16 against 4.0-4.5 s in fp32 (two runs of
        # benchmarks/precision.py --all).
        return "amx_fp16" in flags
    return dtype == torch.float32


def _warn(text: str) -> None:
    warnings.warn(text, RuntimeWarning, stacklevel=3)


def make_generator(seed: int) -> torch.Generator:
    """A CPU generator: the same noise on every device, as the reference's CPU stream."""
    return torch.Generator("cpu").manual_seed(int(seed))


def bicubic(x: torch.Tensor, size: tuple[int, int] | None = None, scale: float | None = None,
            antialias: bool = False) -> torch.Tensor:  # fmt: skip
    """Bicubic resize (align_corners=False) of (B, C, H, W) ``x``, computed on the CPU for MPS tensors.

    PyTorch 2.4 and 2.5 have no MPS kernel for bicubic upsampling (NotImplementedError unless a fallback
    variable is set before torch is imported) and none for antialiased bicubic; one resize on the CPU
    costs little next to the networks.
    """
    src = x.cpu() if x.device.type == "mps" else x
    out = F.interpolate(
        src, size=size, scale_factor=scale, mode="bicubic", antialias=antialias, align_corners=False
    )
    return out.to(x.device)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (CUDA, MPS or the CPU allocator)."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def release_memory(device: torch.device) -> None:
    """Give cached blocks back after a failed allocation, before trying smaller work."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def free_memory(device: torch.device) -> int:
    """Bytes the device can still give us (a conservative reading)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "mps":
        mps = torch.mps
        return int(mps.recommended_max_memory() - mps.driver_allocated_memory())
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    pages, page = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    return int(pages * page // 2)


def memory_budget(device: torch.device, dtype: torch.dtype) -> Budget:
    """What the automatic tile of :func:`restore_cli.tiling.resolve` needs to know of the device."""
    return Budget(free_memory(device), device.type == "cpu", dtype != torch.float32)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())
