"""Choosing the device and dtype, and making per-image generators."""

from __future__ import annotations

import gc

import torch
import torch.nn.functional as F

from .errors import UsageError

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
        raise UsageError(f"unknown device '{name}'", "use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("CUDA is not available here", "use --device cpu (or auto)")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise UsageError(
                f"no CUDA device {index} (found {torch.cuda.device_count()})",
                "pick one of the listed devices (`restore info`)",
            )
    elif device.type == "mps" and not _mps_available():
        raise UsageError("Apple MPS is not available here", "use --device cpu (or auto)")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"unsupported device '{name}'", "use auto, cpu, cuda, cuda:N or mps")
    return device


def resolve_dtype(name: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``auto``: fp16 on CUDA (as the reference runs), fp32 elsewhere. Unsupported pairs fail."""
    if isinstance(name, torch.dtype):
        dtype = name
    elif name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    elif name in DTYPES:
        dtype = DTYPES[name]
    else:
        raise UsageError(f"unknown dtype '{name}'", "use auto, fp32, fp16 or bf16")
    if dtype not in DTYPES.values():
        raise UsageError(f"unsupported dtype {dtype}", "use fp32, fp16 or bf16")
    if device.type == "cpu" and dtype == torch.float16:
        raise UsageError("fp16 is not supported on the CPU", "use --dtype fp32 (or bf16)")
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise UsageError("this GPU has no bf16 support", "use --dtype fp16 or fp32")
    return dtype


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


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())
