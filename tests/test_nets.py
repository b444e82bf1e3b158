"""Architecture: state-dict keys and shapes equal the released checkpoints' (reference
``models/unet.py``, ``ldm/models/autoencoder.py``)."""

from __future__ import annotations

import dataclasses
import itertools
import json

import pytest
import torch
import torch.nn.functional as F

from restore_cli import nets
from restore_cli.nets import vqgan
from restore_cli.nets.swin import reference_shift_mask, relative_position_index
from restore_cli.registry import default_registry

from .conftest import DATA
from .reference_fill import fill_kinds

CONFIGS = {
    "realsr-v1": "realsr_swinunet_realesrgan256",
    "realsr-v2": "realsr_swinunet_realesrgan256",
    "realsr-v3": "realsr_swinunet_realesrgan256_journal",
    "bicsr": "bicx4_swinunet_lpips",
    "inpaint-imagenet": "inpaint_lama256_imagenet",
    "inpaint-face": "inpaint_lama256_face",
    "faceir": "faceir_gfpgan512_lpips",
}


def shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def reference_keys(config: str, part: str) -> dict[str, list[int]]:
    return json.loads((DATA / "keys" / f"{config}.{part}.json").read_text())


@pytest.mark.parametrize("model", sorted(CONFIGS))
def test_keys_and_shapes_match_released_checkpoints(model: str) -> None:
    spec = default_registry().get(model)
    unet, vq = nets.build(spec.unet), nets.build(spec.autoencoder.config)
    assert shapes(unet) == reference_keys(CONFIGS[model], "unet")
    assert shapes(vq) == reference_keys(CONFIGS[model], "autoencoder")


def test_x2_config_without_checkpoint_also_matches() -> None:
    """The x2 config (lq_size 128: a 1-stage extractor) shows the architecture is general."""
    cfg = dataclasses.replace(default_registry().get("realsr-v3").unet, lq_size=128)
    unet = nets.build(cfg)
    assert shapes(unet) == reference_keys("realsr_realesrgan256_x2", "unet")


@pytest.mark.parametrize(
    "model, vectors",
    [("realsr-v3", "realsr_v3"), ("inpaint-imagenet", "inpaint_imagenet"), ("faceir", "faceir")],
)
def test_fill_kinds_agree_with_reference(model: str, vectors: str) -> None:
    """Our classification of keys (norm / vec / nd / buffer) is the reference fill's."""
    spec = default_registry().get(model)
    unet, vq = nets.build(spec.unet), nets.build(spec.autoencoder.config)
    for module, part in ((unet, "unet"), (vq, "autoencoder")):
        expected = json.loads((DATA / "fill-kinds" / f"{vectors}.{part}.json").read_text())
        assert fill_kinds(module) == expected


def test_buffers_are_real_when_built_on_meta() -> None:
    spec = default_registry().get("realsr-v3")
    unet = nets.build(spec.unet)
    index = unet.state_dict()["input_blocks.1.1.blocks.0.attn.relative_position_index"]
    assert index.device.type == "cpu"
    assert torch.equal(index, relative_position_index(8))
    assert index.max().item() == 224 and index[0, 0].item() == 112  # (2*8-1)^2 - 1, centre


def test_reference_shift_mask_only_masks_bottom_window_row_by_column_halves() -> None:
    mask = reference_shift_mask(4, 3, 8, 4).view(4, 3, 64, 64)
    assert mask[:3].abs().sum() == 0  # upper window rows: no mask at all
    col = torch.arange(64) % 8
    for win in range(3):  # every window of the bottom row, the right-most one included
        expected = ((col[:, None] >= 4) != (col[None, :] >= 4)).float() * -100.0
        assert torch.equal(mask[3, win], expected)


def test_registry_numel_matches_the_networks() -> None:
    """`restore models list` shows sizes from weights.toml's `numel` without building networks."""
    for spec in default_registry().models.values():
        built = (nets.build(spec.unet), nets.build(spec.autoencoder.config))
        assert spec.numel == sum(t.numel() for m in built for t in m.state_dict().values())


@pytest.mark.parametrize("shift", [0, 4])
def test_swin_blocks_on_large_maps_work_in_bands_with_the_whole_maps_result(
    monkeypatch: pytest.MonkeyPatch, shift: int
) -> None:
    """Window attention and the MLP run in bands of rows once a map has more than
    ``CHUNK_TOKENS`` tokens (memory); every band must give what the whole map gives, the shifted
    windows' mask included (non-square map, batch of two)."""
    from restore_cli.nets import swin

    g = torch.Generator().manual_seed(0)
    block = swin.SwinTransformerBlock(32, 64, 2, 8, shift, 2).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    x = torch.randn(2, 32, 48, 40, generator=g)
    with torch.inference_mode():
        whole = block(x)
        monkeypatch.setattr(swin, "CHUNK_TOKENS", 2 * 8 * 40)  # one window row per band
        banded = block(x)
        monkeypatch.setattr(swin, "CHUNK_TOKENS", 1)  # and single rows (the MLP off the CPU)
        single = block(x)
    assert not torch.equal(whole, x)
    torch.testing.assert_close(banded, whole, rtol=0, atol=1e-5)
    torch.testing.assert_close(single, whole, rtol=0, atol=1e-5)


@pytest.mark.parametrize("tokens", [1024, 37, 1])
def test_swin_mlp_on_the_cpu_in_token_bands_gives_the_two_convolutions_result(
    monkeypatch: pytest.MonkeyPatch, tokens: int
) -> None:
    """On the CPU the MLP runs as matrix products over bands of ``MLP_TOKENS`` tokens (a band may
    end inside a row, and the last one short); it must give ``fc2(gelu(fc1(x)))`` as the two 1x1
    convolutions compute it over the whole map, for every image of a batch."""
    from restore_cli.nets import swin

    g = torch.Generator().manual_seed(0)
    mlp = swin.Mlp(24, 96).eval()
    with torch.no_grad():
        for p in mlp.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    x = torch.randn(2, 24, 12, 10, generator=g)
    monkeypatch.setattr(swin, "MLP_TOKENS", tokens)
    with torch.inference_mode():
        banded = mlp(x)
        convs = mlp.fc2(mlp.act(mlp.fc1(x)))
    assert banded.shape == convs.shape == (2, 24, 12, 10)
    torch.testing.assert_close(banded, convs, rtol=0, atol=1e-5)


def test_shifted_blocks_keep_band_sized_masks_equal_to_the_reference_masks_bottom_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The shifted-window mask is kept for the map's last band of window rows only (the rest of
    the reference's mask is zeros): it must be that slice of the whole mask, and a banded call
    must not keep a whole-map mask (16 MiB per block at a 256x256 latent)."""
    from restore_cli.nets import swin

    block = swin.SwinTransformerBlock(32, 64, 2, 8, 4, 2).eval()
    whole = reference_shift_mask(6, 5, 8, 4)
    for rows in (1, 2, 6):
        assert torch.equal(block._bottom_mask(rows, 5, torch.device("cpu")), whole[-rows * 5 :])
    block._masks.clear()
    monkeypatch.setattr(swin, "CHUNK_TOKENS", 2 * 8 * 40)  # one window row per band
    with torch.inference_mode():
        block(torch.randn(2, 32, 48, 40))
    kept = sum(m.numel() for m in block._masks.values())
    assert 0 < kept <= reference_shift_mask(1, 5, 8, 4).numel()


def _filled(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1.0 if p.ndim == 1 else 0.0))
    return module.eval()


def test_large_maps_go_through_norm_silu_conv_in_bands_with_the_whole_maps_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Above ``LARGE_MAP_BYTES`` the residual blocks, the upsampling and the autoencoder's output
    layer run in bands of rows (memory); lowered here so small maps take that path, every band
    must give what the whole map gives: halo rows, whole-map statistics, the timestep scale-shift,
    both shortcuts, the output written over its own input."""
    from restore_cli.nets import layers, vqgan

    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 64, 22, 36, generator=g).to(memory_format=torch.channels_last) * 3 + 1
    emb = torch.randn(2, 48, generator=g)
    cases = {
        "vq resnet 64->32": (_filled(vqgan.ResnetBlock(64, 32), 1), (x,)),
        "vq resnet 64->64": (_filled(vqgan.ResnetBlock(64, 64), 2), (x,)),
        "unet resblock 64->32": (_filled(layers.ResBlock(64, 48, 32), 3), (x, emb)),
        "unet resblock 64->64": (_filled(layers.ResBlock(64, 48, 64), 4), (x, emb)),
        "upsample": (_filled(layers.Upsample(64), 5), (x,)),
    }
    given = x.clone()
    with torch.inference_mode():
        whole = {name: m(*args) for name, (m, args) in cases.items()}
        monkeypatch.setattr(layers, "LARGE_MAP_BYTES", 0)
        monkeypatch.setattr(layers, "BAND_BYTES", 2 * 64 * 36 * 4 * 3)  # three rows per band
        assert layers.in_bands(x)
        for name, (m, args) in cases.items():
            banded = m(*args)
            assert banded.shape == whole[name].shape, name
            # float32 rounding only (a band's Winograd tiles start at the band), against the scale
            err = (banded - whole[name]).abs().max() / whole[name].abs().max()
            assert err < 1e-5, f"{name}: {err:.2e}"
            assert banded.is_contiguous(memory_format=torch.channels_last), name
        assert torch.equal(x, given)  # only maps a block made itself are written over


def test_a_decoder_in_bands_decodes_as_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    from restore_cli.nets import layers
    from restore_cli.nets.config import VQConfig

    cfg = VQConfig(
        embed_dim=3, n_embed=16, z_channels=3, ch=32, ch_mult=(1, 2), num_res_blocks=(1, 1)
    )
    vq = _filled(nets.vqgan.VQModel(cfg), 7).to(memory_format=torch.channels_last)
    z = torch.randn(1, 3, 12, 20, generator=torch.Generator().manual_seed(2))
    calls = []

    def counted(*args, **kwargs):
        calls.append(args[0].shape)
        return layers.norm_silu_conv(*args, **kwargs)

    with torch.inference_mode():
        whole = vq.decode(z)
        monkeypatch.setattr(layers, "LARGE_MAP_BYTES", 0)
        monkeypatch.setattr(layers, "BAND_BYTES", 32 * 40 * 4 * 2)
        monkeypatch.setattr(nets.vqgan, "norm_silu_conv", counted)
        banded = vq.decode(z)
    assert len(calls) >= 9  # every residual block (two each) and the output layer
    assert (banded - whole).abs().max() / whole.abs().max() < 1e-5


def _assert_freed_between(first: torch.nn.Module, later: torch.nn.Module, *, output: bool) -> list:
    """Hooks: by the time ``later`` starts, ``first``'s input (``output``: its output) is gone.
    Returns the list the checks append to, so a test can see they ran."""
    import weakref

    seen: list[bool] = []
    ref: list = []

    def keep(_m, args, out=None) -> None:
        ref[:] = [weakref.ref(out if output else args[0])]

    def check(_m, _args, kwargs) -> None:
        if ref:
            # gone, or handed on as the spare map the later block writes its first map into
            seen.append(ref[0]() is None or ref[0]() is kwargs.get("spare"))

    if output:
        first.register_forward_hook(keep)
    else:
        first.register_forward_pre_hook(keep)
    later.register_forward_pre_hook(check, with_kwargs=True)
    return seen


def test_each_map_is_freed_as_soon_as_the_next_layer_has_it(registry) -> None:
    """Peak memory at large sizes: the encoder, the decoder and the UNet run their layers in one
    loop of their own. A level or block called as a module kept its input alive through all its
    layers (the decoder's upsampled top-level map, the largest, through three blocks), and
    ``block(cat([h, skip]))`` kept ``h`` beside its copy in the concatenation."""
    spec = registry.get("tiny-sr")
    vq = _filled(nets.build(spec.autoencoder.config, device="cpu"), 0)
    unet = _filled(nets.build(spec.unet, device="cpu"), 1)
    checks = []
    for levels in (vq.encoder.down, vq.decoder.up):
        for level in levels:
            steps = level.steps()
            for a, b in itertools.pairwise(steps):
                checks.append(_assert_freed_between(a, b, output=False))
    for block in unet.output_blocks:
        layers = list(block)
        for a, b in itertools.pairwise(layers):
            checks.append(_assert_freed_between(a, b, output=False))
    for prev, block in itertools.pairwise(unet.output_blocks):
        checks.append(_assert_freed_between(list(prev)[-1], list(block)[0], output=True))
    with torch.inference_mode():
        z = vq.encode(torch.rand(1, 3, 32, 32) * 2 - 1)
        vq.decode(z)
        unet(torch.randn(1, 3, 16, 16), torch.tensor([1]), lq=torch.randn(1, 3, 16, 16))
    assert len(checks) > 8 and all(len(c) == 1 for c in checks)
    assert all(c == [True] for c in checks), checks


def test_autoencoder_blocks_reuse_the_dead_map_before_them() -> None:
    """A new map's pages cost more than the normalisation written into them: each residual block
    of the autoencoder writes its maps into the previous block's input (dead by then) or its own,
    and the results stay those of the plain computation."""
    block = _filled(vqgan.ResnetBlock(64, 64), 2)
    x = torch.randn(1, 64, 32, 32).contiguous(memory_format=torch.channels_last)
    spare = torch.empty_like(x)
    with torch.inference_mode():
        plain = block.conv2(F.silu(block.norm2(block.conv1(F.silu(block.norm1(x))))))
        plain = plain + x
        out = block(x.clone(), spare=spare)
        assert out.data_ptr() == spare.data_ptr()  # written into the spare map
        torch.testing.assert_close(out, plain, rtol=0, atol=1e-5)
        wrong = torch.empty(1, 64, 16, 16).contiguous(memory_format=torch.channels_last)
        again = block(x, spare=wrong)  # does not fit: a new map, same numbers
        assert again.data_ptr() != wrong.data_ptr()
        torch.testing.assert_close(again, out, rtol=0, atol=0)


@pytest.mark.parametrize("chunk", [256, 7, 1])
def test_codebook_search_in_chunks_picks_every_latents_nearest_code(
    monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """The quantiser searches the codebook a chunk of latents at a time in one reused buffer
    (the last chunk short); every latent must get its nearest code, as a search over all
    distances at once (in float64) finds it, for every image of a batch."""
    from restore_cli.nets import vqgan

    g = torch.Generator().manual_seed(0)
    q = vqgan.VectorQuantizer(300, 3)
    with torch.no_grad():
        q.embedding.weight.copy_(torch.randn(300, 3, generator=g))
    z = torch.randn(2, 3, 9, 10, generator=g)
    monkeypatch.setattr(vqgan, "QUANT_CHUNK", chunk)
    with torch.inference_mode():
        got = q(z)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 3).double()
    nearest = torch.cdist(flat, q.embedding.weight.double()).argmin(dim=1)
    want = q.embedding.weight[nearest].view(2, 9, 10, 3).permute(0, 3, 1, 2)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
