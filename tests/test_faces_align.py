"""Alignment: FFHQ template, the LMEDS similarity (OpenCV ``calib3d/src/ptsetreg.cpp:
LMeDSPointSetRegistrator::run`` as facexlib's ``FaceRestoreHelper.align_warp_face`` calls it) and
the crop warp (``cv2.warpAffine``), against the reference's paste vectors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file

from restore_cli import faces
from restore_cli.errors import InputError
from restore_cli.faces.align import _least_squares, _pairs

from .face_fill import DATA, astronaut

# cases.json of the reference: LMEDS inliers of the two faces (the same in every case)
INLIERS = ([1, 0, 1, 0, 1], [1, 1, 1, 1, 0])


@pytest.fixture(scope="module")
def vectors() -> dict[str, np.ndarray]:
    return load_file(str(DATA / "paste.safetensors"))


def similarity(scale: float, angle: float, t: tuple[float, float]) -> np.ndarray:
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, t[0]], [s, c, t[1]]])


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def test_opencv_pair_sequence() -> None:
    # face-spec: OpenCV's RNG(2^64 - 1) draws these 13 pairs for 5 points (and for 3)
    assert _pairs(5) == [(0, 4), (0, 3), (1, 2), (1, 0), (3, 0), (0, 4), (1, 4), (3, 1), (0, 3),
                         (0, 1), (0, 4), (4, 1), (0, 3)]  # fmt: skip
    assert _pairs(3) == [(0, 1), (2, 0), (0, 2), (0, 2), (2, 0), (1, 0), (1, 2), (0, 2), (2, 0),
                         (1, 2), (0, 1), (0, 1), (2, 1)]  # fmt: skip


@pytest.mark.parametrize("outlier", [0, 2, 3, 4])
def test_lmeds_recovers_similarity_with_one_outlier(outlier: int) -> None:
    truth = similarity(2.7, 0.35, (40.0, -12.5))  # photo -> crop
    template = faces.FFHQ_TEMPLATE_512
    landmarks = apply(faces.paste_affine(truth), template)  # the photo points of the template
    landmarks[outlier] += (9.0, -7.0)  # one misplaced landmark
    m, inliers = faces.estimate_similarity(landmarks, template)
    expected = np.ones(5, dtype=bool)
    expected[outlier] = False
    assert inliers.tolist() == expected.tolist()
    assert np.abs(m - truth).max() <= 1e-4 * np.abs(truth).max()
    # plain least squares over all five points (skimage / Umeyama) is pulled off by the outlier
    assert np.abs(_least_squares(landmarks, template) - truth).max() > 0.5


def test_lmeds_exact_points_and_degenerate() -> None:
    truth = similarity(0.5, -1.1, (3.0, 7.0))
    src = np.array([[0.0, 0.0], [10.0, 0.0], [3.0, 8.0], [5.0, 5.0], [-4.0, 2.0]])
    m, inliers = faces.estimate_similarity(src, apply(truth, src))
    assert inliers.all() and np.allclose(m, truth, atol=1e-5)
    m2, _ = faces.estimate_similarity(src[:2], apply(truth, src[:2]))  # two points: exact
    assert np.allclose(m2, truth, atol=1e-5)
    with pytest.raises(InputError):
        faces.estimate_similarity(np.zeros((5, 2)), src)


def test_paste_vector_affines(vectors: dict[str, np.ndarray]) -> None:
    for case, ratio in (("up1_rect_nobg", (1.0, 1.0)), ("up3_rect_nobg_crop1.25", (1.25, 1.25))):
        template, crop_size = faces.face_template(512, ratio)
        assert np.allclose(template, vectors[f"{case}.face_template"], atol=1e-12)
        assert crop_size == ((512, 512) if ratio[0] == 1 else (640, 640))
        for k in range(2):
            m, inliers = faces.estimate_similarity(vectors[f"{case}.landmarks"][k], template)
            assert inliers.astype(int).tolist() == INLIERS[k]
            assert np.abs(m - vectors[f"{case}.affine"][k]).max() <= 1e-8


def test_template_crop_ratio() -> None:
    template, size = faces.face_template(256, (1.5, 1.0))  # (height ratio, width ratio)
    assert size == (256, 384)
    assert np.allclose(template[:, 0], faces.FFHQ_TEMPLATE_512[:, 0] / 2)
    assert np.allclose(template[:, 1], faces.FFHQ_TEMPLATE_512[:, 1] / 2 + 64)
    with pytest.raises(ValueError):
        faces.face_template(512, (0.9, 1.0))


def test_crops_match_reference(vectors: dict[str, np.ndarray]) -> None:
    photo = astronaut()
    for ratio, case, step in (("1", "up1_rect_nobg", 1), ("1.25", "up3_rect_nobg_crop1.25", 2)):
        r = float(ratio)
        for k in range(2):
            crop, affine = faces.align(photo, vectors[f"{case}.landmarks"][k], 512, (r, r))
            assert crop.size == (int(512 * r),) * 2 and crop.mode == "RGB"
            ref = np.asarray(Image.open(DATA / f"crop_{ratio}_{k}.png")).astype(int)
            got = np.asarray(crop).astype(int)[::step, ::step]
            assert np.abs(got - ref).max() <= 1  # bit-exact in practice (OpenCV's 1/32 px warp)
            assert np.mean(got != ref) < 1e-3
            assert np.abs(affine - vectors[f"{case}.affine"][k]).max() <= 1e-8


def test_crop_border_colour() -> None:
    # a face near the corner: outside the photo the crop is facexlib's (135, 133, 132) BGR
    photo = Image.new("RGB", (64, 64), (10, 20, 30))
    landmarks = faces.FFHQ_TEMPLATE_512 / 8 - 20
    crop, _ = faces.align(photo, landmarks, size=64)
    a = np.asarray(crop)
    assert tuple(a[0, 0]) == (132, 133, 135)
    assert tuple(a[-1, -1]) == (10, 20, 30)
