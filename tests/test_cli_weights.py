"""The command line's weights handling end to end, against the local fake server and Hub: first use
downloads (licence shown), `models list/path/verify/download`, offline runs from the cache, a
corrupted cache file, and `--checkpoint hf://...`."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save as save_safetensors

from restore_cli import nets
from restore_cli.cli import main
from restore_cli.registry import load_registry

from .conftest import TINY_REGISTRY
from .fakehub import FakeServer, isolate_hf
from .reference_fill import reference_state_dict
from .test_cli import rgb

RELEASE = "/zsyOAOA/ResShift/releases/download/v2.0"


def _pth(state: dict[str, torch.Tensor], prefix: str = "", wrap: bool = False) -> bytes:
    state = {prefix + k: v for k, v in state.items()}
    buf = io.BytesIO()
    torch.save({"state_dict": state} if wrap else state, buf)
    return buf.getvalue()


@pytest.fixture
def web(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A registry file naming a tiny model whose weights the fake server publishes as the authors
    do (.pth release assets; the UNet wrapped and DDP-prefixed), and the state dicts served."""
    spec = load_registry([TINY_REGISTRY]).get("tiny-sr")
    unet, vq = nets.build(spec.unet), nets.build(spec.autoencoder.config)
    states = {"unet": reference_state_dict(unet), "vq": reference_state_dict(vq)}
    with FakeServer() as server:
        isolate_hf(monkeypatch, tmp_path / "hf", server.url)
        unet_url = server.add_file(f"{RELEASE}/web_unet.pth", _pth(states["unet"], "module.", True))
        vq_url = server.add_file(f"{RELEASE}/web_vq.pth", _pth(states["vq"]))
        server.add_repo_file(
            "someone/finetuned", "unet.safetensors", save_safetensors(states["unet"])
        )
        registry = tmp_path / "web.toml"
        registry.write_text(
            f"""
[autoencoders.web-f4]
embed_dim = 3
n_embed = 64
z_channels = 3
ch = 32
ch_mult = [1, 1, 2]
num_res_blocks = [1, 1, 1]
url = "{vq_url}"
licence = "Web Test Licence (non-commercial)"

[models.web-sr]
task = "sr"
scale = 4
pad_multiple = 16
unet = "tiny-sr"
autoencoder = "web-f4"
url = "{unet_url}"
licence = "Web Test Licence (non-commercial)"
schedule = {{ steps = 4, kappa = 2.0, power = 0.3, min_noise_level = 0.2, etas_end = 0.99 }}
"""
        )
        yield server, ["--registry", str(TINY_REGISTRY), "--registry", str(registry)]


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_first_use_downloads_then_everything_works_offline(tmp_path, web, capsys) -> None:
    server, reg = web
    src = rgb(tmp_path / "a.png")
    run = ["sr", str(src), "-m", "web-sr", "--device", "cpu", *reg]

    code, out, _ = cli(["models", "list", "--json", *reg], capsys)
    row = next(json.loads(line) for line in out.splitlines() if '"web-sr"' in line)
    assert code == 0 and row["cached"] is False

    code, _, err = cli([*run, "--offline"], capsys)  # nothing cached: one line, exit 3
    assert code == 3 and "restore models download web-sr" in err and "Traceback" not in err
    assert server.seen() == []

    code, _, err = cli(run, capsys)  # first use: downloads both files, shows the licence
    assert code == 0, err
    assert "Web Test Licence" in err and (tmp_path / "a_x4.png").is_file()
    fetched = len(server.seen("GET"))
    assert fetched >= 2

    code, out, _ = cli(["models", "list", "--json", *reg], capsys)
    row = next(json.loads(line) for line in out.splitlines() if '"web-sr"' in line)
    assert row["cached"] is True
    code, out, _ = cli(["models", "path", "web-sr", *reg], capsys)
    paths = [Path(p) for p in out.split()]
    assert code == 0 and len(paths) == 2 and all(p.suffix == ".safetensors" for p in paths)
    assert all(p.is_file() and str(p).startswith(str(tmp_path / "hf")) for p in paths)
    code, _, err = cli(["models", "verify", "web-sr", *reg], capsys)
    assert code == 0 and err.count(": ok") == 2

    code, _, err = cli([*run, "--offline", "--overwrite"], capsys)  # from the cache, no request
    assert code == 0, err
    assert len(server.seen("GET")) == fetched

    unet_file = paths[0]
    data = bytearray(unet_file.read_bytes())
    data[-1] ^= 0xFF  # a flipped bit in the cached weights
    unet_file.write_bytes(bytes(data))
    code, _, err = cli(["models", "verify", "web-sr", *reg], capsys)
    assert code == 3 and "sha256" in err.lower()
    code, _, err = cli([*run, "--offline", "--overwrite"], capsys)
    assert code == 3 and "Traceback" not in err


def test_models_download_then_hf_checkpoint(tmp_path, web, capsys) -> None:
    server, reg = web
    code, _, err = cli(["models", "download", "web-sr", *reg], capsys)
    assert code == 0, err
    assert "Web Test Licence" in err
    code, _, err = cli(["models", "download", "web-sr", *reg], capsys)  # cached: no new request
    assert code == 0 and "downloading" not in err
    src = rgb(tmp_path / "b.png")
    out = tmp_path / "b_hf.png"
    code, _, err = cli(["sr", str(src), "-o", str(out), "-m", "web-sr", "--device", "cpu",
                        "--checkpoint", "hf://someone/finetuned@main/unet.safetensors", *reg],
                       capsys)  # fmt: skip
    assert code == 0, err
    assert Image.open(out).size == (96, 64)
    assert any("/someone/finetuned/resolve/" in r.path for r in server.seen())
