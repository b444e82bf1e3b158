"""Shared fixtures: registries, deterministic reference weights written to files once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from restore_cli import nets
from restore_cli.registry import ModelSpec, Registry, default_registry, load_registry

from .reference_fill import reference_state_dict

DATA = Path(__file__).parent / "data"
TINY_REGISTRY = DATA / "tiny.toml"
GOLDEN = DATA / "golden"

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(autouse=True)
def _same_random_stream_for_every_test() -> None:
    """Tests that draw from torch's global generator see the same numbers whatever ran before
    (a test that seeds it, or one added earlier in the order, no longer changes another's input)."""
    torch.manual_seed(20261203)


@pytest.fixture(scope="session")
def registry() -> Registry:
    return load_registry([TINY_REGISTRY])


def write_weights(spec: ModelSpec, folder: Path) -> tuple[Path, Path]:
    """Deterministically filled UNet and autoencoder weights of ``spec`` as .safetensors."""
    folder.mkdir(parents=True, exist_ok=True)
    unet_file, ae_file = (
        folder / f"{spec.name}.unet.safetensors",
        folder / f"{spec.name}.ae.safetensors",
    )
    unet, vq = nets.build(spec.unet), nets.build(spec.autoencoder.config)
    if not unet_file.exists():
        save_file(reference_state_dict(unet), str(unet_file))
    if not ae_file.exists():
        save_file(reference_state_dict(vq), str(ae_file))
    return unet_file, ae_file


@pytest.fixture(scope="session")
def weights(tmp_path_factory: pytest.TempPathFactory, registry: Registry):
    """weights(name) -> (unet_file, autoencoder_file), built once per session per model."""
    folder = tmp_path_factory.mktemp("weights")
    cache: dict[str, tuple[Path, Path]] = {}

    def get(name: str) -> tuple[Path, Path]:
        if name not in cache:
            spec = registry.get(name) if name in registry.models else default_registry().get(name)
            cache[name] = write_weights(spec, folder)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def load(registry: Registry, weights):
    """load(name) -> a Restorer of a tiny test model on the CPU, built once per test module."""
    import restore_cli
    from restore_cli.pipeline import Restorer

    cache: dict[str, Restorer] = {}

    def get(name: str) -> Restorer:
        if name not in cache:
            unet, ae = weights(name)
            cache[name] = restore_cli.load(
                registry.get(name), checkpoint=unet, autoencoder=ae, device="cpu"
            )
        return cache[name]

    return get


@pytest.fixture()
def tiny_args(weights):
    """tiny_args(model) -> the command-line arguments that run a tiny test model on the CPU."""
    from .scale import tiny_args as args_for

    return lambda model="tiny-sr": args_for(weights, model)
