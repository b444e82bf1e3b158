"""Whole-photo faces on the command line: `restore face photo` and `restore sr photo --faces`,
with tiny face and SR models and deterministically filled RetinaFace weights downloaded from the
local fake server (the registry's detector entry pointed there).

Filled detector weights find no plausible face in a photo (every detection has its eyes < 5 px
apart), so the runs that need faces stub ``Detector.detect`` only, returning the reference's two
faces of the astronaut image; loading, alignment, the face model, paste-back, `--save-crops`,
`--json`, `--upscale` and the background model all run for real.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import png
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import restore_cli
from restore_cli import faces, nets
from restore_cli.cli import main
from restore_cli.registry import load_registry

from .conftest import TINY_REGISTRY
from .face_fill import astronaut, face_state_dict
from .fakehub import FakeServer, isolate_hf
from .reference_fill import reference_state_dict

DATA = Path(__file__).parent / "data" / "face"
HALF = 0.5  # the photo is the 512 astronaut at half size: 256 x 256


def _pth(state: dict[str, torch.Tensor], prefix: str = "") -> bytes:
    buf = io.BytesIO()
    torch.save({prefix + k: v for k, v in state.items()}, buf)
    return buf.getvalue()


@pytest.fixture
def web(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    reg = load_registry([TINY_REGISTRY])
    with FakeServer() as server:
        isolate_hf(monkeypatch, tmp_path / "hf", server.url)
        det = nets.build(nets.RetinaFaceConfig("mobile0.25"))
        det_url = server.add_file(
            "/xinntao/facexlib/releases/download/v0.1.0/detection_mobilenet0.25_Final.pth",
            _pth(face_state_dict(det), "module."),
        )
        urls = {}
        for name in ("tiny-face", "tiny-sr"):
            spec = reg.get(name)
            for part, cfg in (("unet", spec.unet), ("vq", spec.autoencoder.config)):
                state = reference_state_dict(nets.build(cfg))
                urls[name, part] = server.add_file(f"/w/{name}.{part}.pth", _pth(state))
        registry = tmp_path / "web.toml"
        registry.write_text(
            f"""
[detectors.retinaface-mobilenet]
backbone = "mobile0.25"
url = "{det_url}"
licence = "MIT"

[autoencoders.web-f8]
embed_dim = 4
n_embed = 64
z_channels = 4
ch = 32
ch_mult = [1, 1, 2, 2]
num_res_blocks = [1, 1, 1, 1]
url = "{urls["tiny-face", "vq"]}"
licence = "test"

[autoencoders.web-f4]
embed_dim = 3
n_embed = 64
z_channels = 3
ch = 32
ch_mult = [1, 1, 2]
num_res_blocks = [1, 1, 1]
url = "{urls["tiny-sr", "vq"]}"
licence = "test"

[models.web-face]
task = "face"
scale = 1
pad_multiple = 128
input_size = 128
unet = "tiny-face"
autoencoder = "web-f8"
url = "{urls["tiny-face", "unet"]}"
licence = "test"
schedule = {{ steps = 4, kappa = 2.0, power = 0.3, min_noise_level = 0.2, etas_end = 0.99 }}

[models.web-sr]
task = "sr"
scale = 4
pad_multiple = 16
unet = "tiny-sr"
autoencoder = "web-f4"
url = "{urls["tiny-sr", "unet"]}"
licence = "test"
schedule = {{ steps = 4, kappa = 2.0, power = 0.3, min_noise_level = 0.2, etas_end = 0.99 }}
"""
        )
        yield ["--registry", str(TINY_REGISTRY), "--registry", str(registry), "--device", "cpu"]


def _check_tiny_registry_matches() -> None:
    """The web-f8 / web-f4 entries above restate tiny.toml's tiny-f8 / tiny-f4."""
    reg = load_registry([TINY_REGISTRY])
    assert reg.get("tiny-face").autoencoder.config.ch_mult == (1, 1, 2, 2)
    assert reg.get("tiny-sr").autoencoder.config.ch_mult == (1, 1, 2)


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "family.png"
    astronaut().resize((256, 256), Image.Resampling.LANCZOS).save(path)
    return path


@pytest.fixture
def two_faces(monkeypatch: pytest.MonkeyPatch) -> list[faces.Face]:
    """``Detector.detect`` finds the reference's two faces (landmarks scaled to the photo)."""
    lms = load_file(str(DATA / "paste.safetensors"))["up2_rect_nobg.landmarks"].numpy() * HALF
    found = [
        faces.Face(tuple(float(v) for v in _box(lm)), score, lm)
        for lm, score in zip(lms, (0.99, 0.98), strict=True)
    ]
    monkeypatch.setattr(faces.Detector, "detect", lambda self, image, **kw: list(found))
    return found


def _box(lm: np.ndarray) -> np.ndarray:
    lo, hi = lm.min(0), lm.max(0)
    return np.concatenate([lo - 10, hi + 10])


def cli(argv: list[str], capsys) -> tuple[int, list[dict], str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, [json.loads(x) for x in out.splitlines() if x.startswith("{")], err


def test_no_face_photo_is_written_unchanged_with_real_detection(web, photo, tmp_path, capsys):
    _check_tiny_registry_matches()
    out = tmp_path / "out.png"
    code, recs, err = cli(
        ["face", str(photo), "-o", str(out), "--detector", "mobilenet", "-m", "web-face",
         "--json", *web], capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "replaces built-in [detectors.retinaface-mobilenet]" in err
    assert recs[0]["status"] == "ok" and recs[0]["faces"] == 0 and recs[0]["face_list"] == []
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(photo)))


def test_face_photo_with_crops_json_and_upscale(web, photo, two_faces, tmp_path, capsys):
    crops = tmp_path / "crops"
    args = ["--detector", "mobilenet", "-m", "web-face", "--json", *web]
    code, recs, err = cli(
        ["face", str(photo), "-o", str(tmp_path / "a.png"), "--save-crops", str(crops), *args],
        capsys,
    )
    assert code == 0, err
    rec = recs[0]  # the second face has its eyes 4.5 px apart at this size: not restored
    assert rec["faces"] == 1 and rec["output_size"] == [256, 256]
    assert [f["score"] for f in rec["face_list"]] == [0.99]
    assert np.allclose(rec["face_list"][0]["landmarks"], two_faces[0].landmarks, atol=0.01)
    names = sorted(p.name for p in crops.iterdir())
    assert names == ["family_face0.png", "family_face0_restored.png"]
    assert Image.open(crops / "family_face0.png").size == (512, 512)
    a = np.asarray(Image.open(tmp_path / "a.png")).astype(int)
    before = np.asarray(Image.open(photo)).astype(int)
    changed = np.any(a != before, axis=2)
    assert changed.any()  # the faces were pasted ...
    for face in two_faces[:1]:  # ... inside its footprint only
        x1, y1, x2, y2 = (int(v) for v in face.box)
        changed[max(0, y1 - 60) : y2 + 60, max(0, x1 - 60) : x2 + 60] = False
    assert not changed.any()

    code, recs, err = cli(
        ["face", str(photo), "-o", str(tmp_path / "b.png"), "--upscale", "2",
         "--background-model", "web-sr", *args], capsys,
    )  # fmt: skip
    assert code == 0, err
    assert recs[0]["faces"] == 1 and recs[0]["output_size"] == [512, 512]


def test_sr_with_faces_pastes_them_at_x4_then_applies_scale(
    web, photo, two_faces, tmp_path, capsys
):
    args = ["--faces", "--face-model", "web-face", "--detector", "mobilenet", "-m", "web-sr",
            "--json", *web]  # fmt: skip
    code, recs, err = cli(["sr", str(photo), "-o", str(tmp_path / "x4.png"), *args], capsys)
    assert code == 0, err
    assert recs[0]["faces"] == 1 and recs[0]["output_size"] == [1024, 1024]
    code, plain, err = cli(
        ["sr", str(photo), "-o", str(tmp_path / "plain.png"), "-m", "web-sr", "--json", *web],
        capsys,
    )
    assert code == 0, err
    assert "faces" not in plain[0]
    with_faces = np.asarray(Image.open(tmp_path / "x4.png")).astype(int)
    without = np.asarray(Image.open(tmp_path / "plain.png")).astype(int)
    diff = np.any(with_faces != without, axis=2)
    assert diff.any() and diff[800:].sum() == 0  # the face pasted; the body below it untouched
    code, recs, err = cli(
        ["sr", str(photo), "-o", str(tmp_path / "x2.png"), "--scale", "2", *args], capsys
    )
    assert code == 0, err
    assert recs[0]["output_size"] == [512, 512]


def test_gray_16_bit_photo_keeps_its_kind(web, photo, two_faces, tmp_path, capsys):
    gray = np.asarray(Image.open(photo).convert("L")).astype(np.uint16) * 256
    gray += np.arange(256, dtype=np.uint16)[None, :] % 200  # values 8 bits cannot hold
    src = tmp_path / "gray16.png"
    with open(src, "wb") as fh:
        png.Writer(256, 256, greyscale=True, bitdepth=16).write(fh, gray.tolist())
    out = tmp_path / "gray16_out.png"
    code, recs, err = cli(
        ["face", str(src), "-o", str(out), "--detector", "mobilenet", "-m", "web-face", "--json",
         *web], capsys,
    )  # fmt: skip
    assert code == 0, err
    assert recs[0]["faces"] == 1
    reader = png.Reader(filename=str(out))
    w, h, rows, info = reader.read()
    assert (w, h) == (256, 256) and info["bitdepth"] == 16 and info["greyscale"]
    got = np.vstack([np.asarray(r, dtype=np.uint16) for r in rows])
    assert np.array_equal(got[200:], gray[200:])  # away from the face every 16-bit value is kept


def test_python_api_restores_a_whole_photo_unless_aligned(
    registry, weights, photo, two_faces, monkeypatch
) -> None:
    """`restore_cli.load(face model)(photo)` detects, restores and pastes; aligned=True is a crop."""
    from .face_fill import filled_retinaface

    made: list[str] = []

    def fake_load_detector(name, device="auto", **kw):
        made.append(name)
        return faces.Detector(filled_retinaface("mobile0.25"), torch.device("cpu"))

    monkeypatch.setattr(faces, "load_detector", fake_load_detector)
    unet, ae = weights("tiny-face")
    r = restore_cli.load(registry.get("tiny-face"), checkpoint=unet, autoencoder=ae, device="cpu")
    image = Image.open(photo)
    whole = r(image, seed=3)
    assert whole.size == (256, 256) and made == ["retinaface-resnet50"]
    before, after = np.asarray(image).astype(int), np.asarray(whole).astype(int)
    assert np.any(before != after) and np.array_equal(before[200:], after[200:])
    crop = r(image, seed=3, aligned=True)  # the whole image taken as one aligned crop
    assert crop.size == (256, 256) and np.any(np.asarray(crop).astype(int)[200:] != before[200:])
    r(image, seed=3)
    assert made == ["retinaface-resnet50"]  # the detector is loaded once
