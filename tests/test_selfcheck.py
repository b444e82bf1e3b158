"""The device self-check: agreement passes, wrong numbers warn and fall back to the CPU in float32.

No MPS device exists here, so a broken device is simulated by corrupting the outputs of the device
run; the comparison, the warning and the fallback are the code under test.
"""

from __future__ import annotations

import math

import pytest
import torch

import restore_cli
from restore_cli import selfcheck
from restore_cli.cli import main

from .test_cli import rgb

REAL_PROBE = selfcheck._probe


def broken_probe(stage: str, value: float):
    """A _probe whose non-CPU-float32 runs return ``value`` at ``stage`` (a silently wrong kernel)."""

    def probe(unet, vq, device, dtype):
        out = REAL_PROBE(unet, vq, device, dtype)
        if dtype != torch.float32:  # the run under test; the reference runs in float32
            out[stage] = torch.full_like(out[stage], value)
        return out

    return probe


@pytest.fixture
def native_bf16(monkeypatch):
    """Let the CPU count as having bf16 units, so asking for bf16 keeps it on any processor
    (on one without them, such as an AVX2-only EPYC, ``restore`` would fall back to fp32)."""
    from restore_cli import device

    monkeypatch.setattr(device, "cpu_native", lambda dtype, flags=None: True)


def test_cpu_agrees_with_itself_and_bf16_within_its_tolerance() -> None:
    exact = selfcheck.run(torch.device("cpu"), torch.float32)
    assert exact.ok and exact.error <= 1e-6
    half = selfcheck.run(torch.device("cpu"), torch.bfloat16)
    assert half.ok and 0 < half.error <= selfcheck.TOLERANCE[torch.bfloat16]
    assert half.describe().startswith("ok: cpu bfloat16 vs cpu float32")


@pytest.mark.parametrize(("stage", "value"), [("unet", 0.0), ("decode", math.nan), ("encode", 1e3)])
def test_wrong_numbers_are_caught_and_named(monkeypatch, stage: str, value: float) -> None:
    monkeypatch.setattr(selfcheck, "_probe", broken_probe(stage, value))
    result = selfcheck.run(torch.device("cpu"), torch.bfloat16)
    assert not result.ok and result.stage == stage
    assert result.describe().startswith("FAILED") and stage in result.describe()


def test_load_falls_back_to_cpu_float32_with_a_warning(
    monkeypatch, registry, weights, native_bf16
) -> None:
    monkeypatch.setattr(selfcheck, "_probe", broken_probe("unet", 0.0))
    unet, ae = weights("tiny-sr")
    said: list[str] = []
    r = restore_cli.load(registry.get("tiny-sr"), checkpoint=unet, autoencoder=ae, device="cpu",
                         dtype="bf16", self_check=True, on_warning=said.append)  # fmt: skip
    assert r.device == torch.device("cpu") and r.dtype == torch.float32
    assert len(said) == 1 and "self-check FAILED" in said[0] and "CPU instead" in said[0]
    with pytest.warns(RuntimeWarning, match="self-check FAILED"):
        restore_cli.load(registry.get("tiny-sr"), checkpoint=unet, autoencoder=ae, device="cpu",
                         dtype="bf16", self_check=True)  # fmt: skip


def test_check_runs_only_where_asked(monkeypatch, registry, weights, native_bf16) -> None:
    calls: list[str] = []

    def counting(unet, vq, device, dtype):
        calls.append(str(dtype).removeprefix("torch."))
        return REAL_PROBE(unet, vq, device, dtype)

    monkeypatch.setattr(selfcheck, "_probe", counting)
    unet, ae = weights("tiny-sr")

    def load(**kw):
        return restore_cli.load(registry.get("tiny-sr"), checkpoint=unet, autoencoder=ae,
                                device="cpu", **kw)  # fmt: skip

    monkeypatch.delenv("RESTORE_SELF_CHECK", raising=False)
    load()
    assert calls == []  # the CPU is the reference: no check by default
    monkeypatch.setenv("RESTORE_SELF_CHECK", "1")
    r = load(dtype="bf16")
    assert calls == ["float32", "bfloat16"] and r.dtype == torch.bfloat16  # passed: kept
    monkeypatch.setenv("RESTORE_SELF_CHECK", "0")
    load(self_check=None)
    assert len(calls) == 2


def test_cli_warns_even_when_quiet_and_still_restores(
    tmp_path, monkeypatch, weights, capsys, native_bf16
) -> None:
    from .test_cli import TINY_REGISTRY

    monkeypatch.setattr(selfcheck, "_probe", broken_probe("bicubic", 0.0))
    monkeypatch.setenv("RESTORE_SELF_CHECK", "1")
    unet, ae = weights("tiny-sr")
    src = rgb(tmp_path / "a.png")
    code = main(["sr", str(src), "--registry", str(TINY_REGISTRY), "-m", "tiny-sr",
                 "--checkpoint", str(unet), "--autoencoder", str(ae), "--device", "cpu",
                 "--dtype", "bf16", "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0 and (tmp_path / "a_x4.png").is_file()
    assert "warning: device self-check FAILED" in err and "bicubic" in err
