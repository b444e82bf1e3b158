"""`restore lowlight|derain|underwater` end to end on tiny FLUX-IR configurations
(``data/fluxir/tiny.toml``): a folder with --checkpoint, then `models add` and the same folder by
name offline, the one-line error of a missing model, --steps checks, --json records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from restore_cli.cli import main
from restore_cli.errors import EXIT_MODEL, EXIT_USAGE

from .test_fluxir_use import TINY, authors_pth, cache, specs, states  # noqa: F401  (fixtures)

REG = ["--registry", str(TINY), "--device", "cpu", "--quiet"]


def photos(folder: Path) -> list[Path]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    made = []
    for name, size in [("a.png", (24, 16)), ("b.jpg", (20, 20))]:
        arr = (rng.random((size[1], size[0], 3)) * 60).astype(np.uint8)  # dark
        Image.fromarray(arr).save(folder / name)
        made.append(folder / name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return made


def records(out: str) -> dict[str, dict]:
    return {Path(r["input"]).name: r for r in map(json.loads, out.splitlines())}


def test_lowlight_folder_with_checkpoint_then_by_name_offline(
    states,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    src = tmp_path / "dark"
    photos(src)
    pth = authors_pth(tmp_path / "lolv1_dist2step.pth", states["tiny-lowlight"])
    run = ["lowlight", str(src), "-m", "tiny-lowlight", "--json", *REG]

    code = main([*run, "-o", str(tmp_path / "bright"), "--checkpoint", str(pth)])
    rows = records(capsys.readouterr().out)
    assert code == 1  # the broken file failed alone; the others were written
    assert rows["broken.png"]["status"] == "error" and "broken.png" in rows["broken.png"]["error"]
    for name, size in [("a.png", [24, 16]), ("b.jpg", [20, 20])]:
        assert rows[name]["status"] == "ok" and rows[name]["output_size"] == size
        assert rows[name]["model"] == "tiny-lowlight"
    first = {p.name: p.read_bytes() for p in (tmp_path / "bright").iterdir()}
    assert sorted(first) == ["a.png", "b.png"]

    assert main(["models", "add", "tiny-lowlight", str(pth), "--registry", str(TINY)]) == 0
    pth.unlink()
    code = main([*run, "-o", str(tmp_path / "again"), "--offline"])
    assert code == 1
    again = {p.name: p.read_bytes() for p in (tmp_path / "again").iterdir()}
    assert again == first  # same weights, same seed: the same files, now by name and offline

    code = main([*run, "-o", str(tmp_path / "again"), "--offline"])
    rows = records(capsys.readouterr().out)
    assert rows["a.png"]["status"] == "skipped" and rows["b.jpg"]["status"] == "skipped"


def test_missing_model_steps_and_naming(
    states,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    photo = photos(tmp_path / "in")[0]
    capsys.readouterr()
    code = main(["lowlight", str(photo), "-m", "tiny-lowlight", *REG])
    err = capsys.readouterr().err
    assert code == EXIT_MODEL and err.count("\n") == 1 and "Traceback" not in err
    assert "restore models add tiny-lowlight" in err and "lolv1_dist2step.pth" in err

    code = main(["lowlight", str(photo), "-m", "tiny-lowlight", "--steps", "4", *REG])
    assert code == EXIT_USAGE and "--steps" in capsys.readouterr().err

    pth = authors_pth(tmp_path / "lolv1_dist1step.pth", states["tiny-lowlight"])
    code = main(["lowlight", str(photo), "-m", "tiny-lowlight", "--steps", "1",
                 "--checkpoint", str(pth), *REG])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    out = Image.open(tmp_path / "in" / "a_bright.png")
    assert out.size == (24, 16) and out.mode == "RGB"

    pth = authors_pth(tmp_path / "raindrop_dist2step.pth", states["tiny-derain"])
    code = main(["derain", str(photo), "-m", "tiny-derain", "--checkpoint", str(pth), *REG])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "in" / "a_derained.png").is_file()
    code = main(["derain", str(photo), "-m", "tiny-lowlight", *REG])  # another task's model
    assert code == EXIT_USAGE and "lowlight" in capsys.readouterr().err
