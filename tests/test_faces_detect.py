"""RetinaFace against the face reference's vectors (deterministic fill; both backbones, 3 sizes).

Reference: facexlib ``detection/retinaface.py: RetinaFace.forward / detect_faces`` and
``detection/retinaface_utils.py: PriorBox, decode, decode_landm``; NMS as ``torchvision.ops.nms``.
Data: ``tests/data/face/retinaface.safetensors`` (every 17th anchor row; see its ``extract.py``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from restore_cli import faces, nets
from restore_cli.faces.boxes import decode_boxes, decode_landmarks, nms, prior_boxes
from restore_cli.faces.detect import preprocess

from .face_fill import DATA, astronaut, filled_retinaface

IMAGES = ("astronaut_512x512", "astronaut_640x480", "astronaut_427x333")
ROW_STRIDE = 17


@pytest.fixture(scope="module")
def vectors() -> dict[str, torch.Tensor]:
    return load_file(str(DATA / "retinaface.safetensors"))


@pytest.fixture(scope="module", params=["mobile0.25", "resnet50"])
def run(request: pytest.FixtureRequest) -> dict[str, object]:
    """Per backbone: the filled network and its outputs on the three images."""
    net = filled_retinaface(request.param)
    outs = {}
    with torch.inference_mode():
        for name in IMAGES:
            x = preprocess(astronaut(name))
            outs[name] = (x, *net(x))
    return {"backbone": request.param, "net": net, "outs": outs}


@pytest.fixture(scope="module")
def mobile() -> faces.Detector:
    return faces.Detector(filled_retinaface("mobile0.25"), torch.device("cpu"))


def close(got: torch.Tensor, ref: torch.Tensor) -> None:
    """The reference's tolerance: max|diff| <= 1e-4 max|ref| + 1e-5."""
    tol = 1e-4 * ref.abs().max().item() + 1e-5
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() <= tol


def test_state_dict_layout() -> None:
    # keys.summary.json: 456 / 300 keys, 383 / 253 without num_batches_tracked
    for backbone, keys, learnable in (("resnet50", 456, 27_293_600), ("mobile0.25", 300, 426_608)):
        net = nets.build(nets.RetinaFaceConfig(backbone))
        sd = net.state_dict()
        assert len(sd) == keys
        assert sum(not k.endswith("num_batches_tracked") for k in sd) == keys - (
            73 if backbone == "resnet50" else 47
        )
        assert sum(p.numel() for p in net.parameters()) == learnable
    mobile = nets.build(nets.RetinaFaceConfig("mobile0.25")).state_dict()
    assert tuple(mobile["body.stage1.1.0.weight"].shape) == (8, 1, 3, 3)  # depthwise
    assert tuple(mobile["ssh3.conv7x7_3.0.weight"].shape) == (16, 16, 3, 3)
    assert tuple(mobile["LandmarkHead.2.conv1x1.weight"].shape) == (20, 64, 1, 1)


def test_heads_priors_and_decoding(run: dict, vectors: dict[str, torch.Tensor]) -> None:
    net_name = run["backbone"]
    for image in IMAGES:
        key = f"{net_name}.{image}"
        x, loc, logits, landm = run["outs"][image]
        h, w = x.shape[-2:]
        rows = torch.arange(0, loc.shape[1], ROW_STRIDE)
        if f"{key}.input_corner" in vectors:
            assert torch.equal(x[:, :, -16:, -16:], vectors[f"{key}.input_corner"])
        close(loc[0, rows], vectors[f"{key}.loc"])
        close(logits[0, rows], vectors[f"{key}.conf_logits"])
        close(torch.softmax(logits, -1)[0, rows], vectors[f"{key}.conf"])
        close(landm[0, rows], vectors[f"{key}.landmarks"])
        priors = prior_boxes(h, w)
        assert priors.shape[0] == loc.shape[1]
        assert torch.equal(priors[rows], vectors[f"{key}.priors"])
        close(decode_boxes(loc[0], priors, w, h)[rows], vectors[f"{key}.boxes_px"])
        close(decode_landmarks(landm[0], priors, w, h)[rows], vectors[f"{key}.landmarks_px"])
        close(torch.softmax(logits, -1)[0, rows, 1], vectors[f"{key}.scores"])


def test_anchor_counts() -> None:
    assert prior_boxes(512, 512).shape == (10752, 4)
    assert prior_boxes(480, 640).shape == (12600, 4)
    assert prior_boxes(333, 427).shape == (5978, 4)


def test_intermediate_maps(run: dict, vectors: dict[str, torch.Tensor]) -> None:
    key = f"{run['backbone']}.astronaut_427x333"
    net = run["net"]
    x = run["outs"]["astronaut_427x333"][0]
    with torch.inference_mode():
        body = net.body(x)
        fpn = net.fpn(body)
        ssh = [net.ssh1(fpn[0]), net.ssh2(fpn[1]), net.ssh3(fpn[2])]
    for i in range(3):
        close(body[i][:, :2], vectors[f"{key}.inter.body.{i}"])
        close(fpn[i][:, :2], vectors[f"{key}.inter.fpn.{i}"])
        close(ssh[i][:, :2], vectors[f"{key}.inter.ssh.{i + 1}"])


@pytest.mark.parametrize("image", IMAGES)
def test_detections_mobilenet(
    image: str, vectors: dict[str, torch.Tensor], mobile: faces.Detector
) -> None:
    det = mobile
    photo = astronaut(image)
    for (conf, iou), name in (
        ((0.55, 0.4), "dets@conf0.55_nms0.4"),
        ((0.6, 0.4), "dets@conf0.6_nms0.4"),
        ((0.55, 0.2), "dets@conf0.55_nms0.2"),
    ):
        ref = vectors[f"mobile0.25.{image}.{name}"].numpy()
        got = det.detect_array(photo, conf, iou)
        assert got.shape == ref.shape
        assert np.abs(got[:, 4] - ref[:, 4]).max() <= 1e-5
        assert np.abs(got[:, :4] - ref[:, :4]).max() <= 1e-3  # pixels (spec: 6e-5 px measured)
        assert np.abs(got[:, 5:] - ref[:, 5:]).max() <= 1e-3
        if name == "dets@conf0.55_nms0.4":
            found = det.detect(photo, threshold=conf, nms=iou)
            assert len(found) == len(ref)
            assert [f.score for f in found] == sorted((f.score for f in found), reverse=True)
            assert found[0].landmarks.shape == (5, 2)
            assert np.allclose(found[0].box, ref[0, :4], atol=1e-3)
            assert np.allclose(found[0].landmarks, ref[0, 5:].reshape(5, 2), atol=1e-3)


def test_nms_rules() -> None:
    # IoU without +1; a box is dropped only when IoU is strictly above the threshold.
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5], [0, 4, 10, 10], [20, 20, 30, 30]], np.float32)
    assert nms(boxes, 0.5).tolist() == [0, 1, 3]  # IoU with box 0: 0.5 (kept), 0.6 (dropped)
    assert nms(boxes, 0.4).tolist() == [0, 3]
    assert nms(boxes, 0.61).tolist() == [0, 1, 2, 3]
    # IoUs are float32, compared with the threshold in double: float32(0.6) > 0.6
    assert nms(boxes, 0.6).tolist() == [0, 1, 3]
    assert nms(np.zeros((0, 4), np.float32), 0.4).tolist() == []


def test_threshold_is_strict_and_nothing_found(mobile: faces.Detector) -> None:
    photo = astronaut("astronaut_427x333")
    assert mobile.detect(photo, threshold=0.97) == []  # filled scores stay below 0.74
    assert mobile.detect_array(photo, 0.97).shape == (0, 15)
    top = float(mobile.detect_array(photo, 0.6, 1.0)[0, 4])  # nms 1.0: nothing suppressed
    assert len(mobile.detect_array(photo, top, 1.0)) == 0  # score > threshold, strictly
    assert len(mobile.detect_array(photo, float(np.nextafter(np.float32(top), 0)), 1.0)) == 1
