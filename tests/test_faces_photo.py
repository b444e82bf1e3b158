"""Whole-photo orchestration (facexlib ``FaceRestoreHelper`` as GFPGAN's ``GFPGANer.enhance``
drives it): face selection, no-face photos, records, backgrounds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import load_file

from restore_cli import faces

from .face_fill import DATA, astronaut, fake_restore, filled_retinaface


def face(box: tuple[float, float, float, float], score: float, eye_dist: float = 20) -> faces.Face:
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    lm = np.array([[cx - eye_dist / 2, cy], [cx + eye_dist / 2, cy], [cx, cy + 5],
                   [cx - 5, cy + 10], [cx + 5, cy + 10]])  # fmt: skip
    return faces.Face(box=box, score=score, landmarks=lm)


class StubDetector:
    """Returns fixed faces (highest score first), whatever the image."""

    def __init__(self, found: list[faces.Face]) -> None:
        self.found = found
        self.calls: list[tuple[tuple[int, int], float, float]] = []

    def detect(self, image: Image.Image, threshold: float = 0.97, nms: float = 0.4):
        self.calls.append((image.size, threshold, nms))
        return [f for f in self.found if f.score > threshold]


def test_select_faces() -> None:
    a = face((0, 0, 40, 40), 0.99)
    b = face((80, 60, 120, 100), 0.98)  # nearest the centre of 200 x 160
    c = face((150, 0, 190, 40), 0.975, eye_dist=4.9)  # eyes too close
    assert faces.select_faces([a, b, c], (200, 160)) == [a, b]
    assert faces.select_faces([a, b, c], (200, 160), eye_dist_threshold=None) == [a, b, c]
    assert faces.select_faces([a, b, c], (200, 160), only_center_face=True) == [b]
    assert faces.select_faces([a, b, c], (200, 160), max_faces=1) == [a]
    assert faces.select_faces([], (200, 160), only_center_face=True) == []


def test_restore_photo_matches_the_paste_reference() -> None:
    v = load_file(str(DATA / "paste.safetensors"))
    lms = v["up2_rect_nobg.landmarks"]
    found = [faces.Face((0, 0, 1, 1), 0.99, lms[0]), faces.Face((0, 0, 1, 1), 0.98, lms[1])]
    det = StubDetector(found)
    out, records = faces.restore_photo(astronaut(), det, fake_restore, upscale=2)
    assert det.calls == [((512, 512), 0.97, 0.4)]
    assert out.size == (1024, 1024) and len(records) == 2
    grid = np.asarray(Image.open(DATA / "paste_up2_rect_nobg_grid.png")).astype(int)
    sampled = grid[..., 3] == 255
    got = np.asarray(out).astype(int)[::2, ::2]
    assert np.abs(got[sampled] - grid[..., :3][sampled]).max() <= 1
    rec = records[0]
    assert set(rec) == {"box", "score", "landmarks", "affine", "crop", "restored"}
    assert rec["score"] == 0.99 and len(rec["landmarks"]) == 5 and rec["crop"].size == (512, 512)
    assert np.abs(rec["affine"] - v["up2_rect_nobg.affine"][0]).max() <= 1e-8


def test_no_face_photo_is_unchanged() -> None:
    photo = astronaut("astronaut_427x333")
    det = faces.Detector(filled_retinaface("mobile0.25"), torch.device("cpu"))
    out, records = faces.restore_photo(photo, det, fake_restore)  # filled scores < 0.97
    assert records == [] and out.tobytes() == photo.tobytes() and out.size == photo.size
    up, records = faces.restore_photo(photo, StubDetector([]), fake_restore, upscale=2)
    assert records == [] and up.size == (854, 666)
    assert up.tobytes() == faces.upscaled_background(photo, 2).tobytes()
    given = Image.new("RGB", (854, 666), (1, 2, 3))
    same, _ = faces.restore_photo(
        photo, StubDetector([]), fake_restore, upscale=2, background=given
    )
    assert same.tobytes() == given.tobytes()
    small = Image.new("RGB", (800, 600), (1, 2, 3))
    resized, _ = faces.restore_photo(
        photo, StubDetector([]), fake_restore, upscale=2, background=small
    )
    assert resized.size == (854, 666) and np.all(np.asarray(resized) == (1, 2, 3))


def test_restore_photo_options_and_errors() -> None:
    v = load_file(str(DATA / "paste.safetensors"))
    lms = v["up1_rect_nobg.landmarks"]
    found = [faces.Face((0, 0, 1, 1), 0.99, lms[0]), faces.Face((0, 0, 1, 1), 0.98, lms[1])]
    photo = astronaut().convert("RGBA")
    out, records = faces.restore_photo(photo, StubDetector(found), fake_restore, max_faces=2)
    assert out.mode == "RGBA" and len(records) == 2
    _, one = faces.restore_photo(photo, StubDetector(found), lambda c: c, max_faces=1)
    assert len(one) == 1 and one[0]["score"] == 0.99
    with pytest.raises(ValueError, match="returned 1 images for 2 crops"):
        faces.restore_photo(photo, StubDetector(found), lambda c: c[:1])
    with pytest.raises(ValueError, match="image for a"):
        faces.restore_photo(photo, StubDetector(found), lambda c: [x.resize((64, 64)) for x in c])
