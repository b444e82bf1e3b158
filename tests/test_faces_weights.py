"""Detector registry entries and loading: facexlib's released layout (every key prefixed with
``module.``, which facexlib ``detection/__init__.py: init_detection_model`` strips) and
checkpoints without BatchNorm's ``num_batches_tracked``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import restore_cli.weights
from restore_cli import faces, nets, weights
from restore_cli.errors import ModelError, WeightsError
from restore_cli.faces.detect import preprocess
from restore_cli.registry import default_registry, load_registry

from .face_fill import astronaut, face_state_dict, filled_retinaface


def test_registry_has_both_detectors() -> None:
    reg = default_registry()
    r50, mobile = reg.detector("retinaface-resnet50"), reg.detector("retinaface-mobilenet")
    assert r50.backbone == "resnet50" and mobile.backbone == "mobile0.25"
    assert r50.source.url == (
        "https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth"
    )
    assert mobile.source.filename == "detection_mobilenet0.25_Final.pth"
    assert "MIT" in r50.licence
    with pytest.raises(ModelError, match="unknown face detector"):
        reg.detector("retinaface-tiny")


@pytest.mark.parametrize(
    "body, error",
    [
        ('backbone = "resnet50"\nurl = "x.pth"\ncolour = 1\n', "unknown key"),
        ('url = "x.pth"\n', "missing key"),
        ('backbone = "vgg"\nurl = "x.pth"\n', "backbone must be"),
    ],
)
def test_detector_entries_are_strict(tmp_path: Path, body: str, error: str) -> None:
    user = tmp_path / "user.toml"
    user.write_text("[detectors.mine]\n" + body)
    with pytest.raises(ModelError, match=error):
        load_registry([user])


def test_user_detector_entry(tmp_path: Path) -> None:
    user = tmp_path / "user.toml"
    user.write_text('[detectors.mine]\nbackbone = "mobile0.25"\nurl = "/tmp/m.pth"\n')
    spec = load_registry([user]).detector("mine")
    assert spec.backbone == "mobile0.25" and spec.source.url == "/tmp/m.pth"


def released_layout(backbone: str) -> dict[str, torch.Tensor]:
    """The filled weights as facexlib's .pth: ``module.`` keys, no ``num_batches_tracked``."""
    net = nets.build(nets.RetinaFaceConfig(backbone))
    state = face_state_dict(net, batches_tracked=False)
    return {f"module.{k}": v for k, v in state.items()}


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_load_detector_from_released_layout(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"detection_mobilenet0.25_Final{suffix}"
    state = released_layout("mobile0.25")
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    det = faces.load_detector("retinaface-mobilenet", checkpoint=path, device="cpu")
    assert det.device == torch.device("cpu")
    x = preprocess(astronaut("astronaut_427x333"))
    with torch.inference_mode():
        ref = filled_retinaface("mobile0.25")(x)
    for got, want in zip(det.net(x), ref, strict=True):
        assert torch.equal(got, want)
    tracked = dict(det.net.named_buffers())["body.stage1.0.1.num_batches_tracked"]
    assert tracked.device.type == "cpu" and tracked.dtype == torch.int64 and tracked.item() == 0


def test_load_detector_through_the_registry(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "w.safetensors"
    save_file(released_layout("mobile0.25"), str(path))
    calls = []

    def fake_resolve(source, **kwargs):
        calls.append((source, kwargs))
        return path

    monkeypatch.setattr(restore_cli.weights, "resolve", fake_resolve)
    seen = []
    det = faces.load_detector(
        "retinaface-mobilenet", device="cpu", offline=True, progress=print,
        on_first_download=seen.append,
    )  # fmt: skip
    source, kwargs = calls[0]
    assert source.filename == "detection_mobilenet0.25_Final.pth"
    expect = kwargs.pop("expect")
    assert kwargs == {
        "name": "retinaface-mobilenet", "offline": True, "progress": print,
        "on_first_download": seen.append,
    }  # fmt: skip
    # a first download is checked strictly before its hash is kept: the right file passes,
    # another backbone's file (or an HTML page turned state dict) is refused
    expect(weights.read_state_dict(path))  # as resolve() hands it over: prefixes stripped
    other = tmp_path / "r50.safetensors"
    save_file(released_layout("resnet50"), str(other))
    with pytest.raises(WeightsError, match="download of retinaface-mobilenet"):
        expect(weights.read_state_dict(other))
    assert isinstance(det, faces.Detector)


def test_load_detector_errors(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        faces.load_detector("retinaface-mobilenet", checkpoint=tmp_path / "nope.pth")
    wrong = tmp_path / "r50.safetensors"
    save_file(released_layout("resnet50"), str(wrong))
    with pytest.raises(WeightsError, match="does not fit"):  # ResNet weights, MobileNet net
        faces.load_detector("retinaface-mobilenet", checkpoint=wrong, device="cpu")


def test_load_into_fills_num_batches_tracked_only() -> None:
    net = nets.build(nets.RetinaFaceConfig("mobile0.25"))  # on meta
    state = face_state_dict(net, batches_tracked=False)
    loaded = weights.load_into(net, state, "filled")
    buffers = dict(loaded.named_buffers())
    assert all(not b.is_meta for b in buffers.values())
    assert all(
        b.item() == 0 and b.dtype == torch.int64
        for k, b in buffers.items()
        if k.endswith("num_batches_tracked")
    )
    del state["fpn.merge1.1.running_mean"]
    with pytest.raises(WeightsError, match="1 missing: fpn.merge1.1.running_mean"):
        weights.load_into(nets.build(nets.RetinaFaceConfig("mobile0.25")), state, "filled")
