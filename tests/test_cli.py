"""The command line end to end on tiny models: naming, skip/overwrite, broken files, exit codes,
JSON lines, image fidelity, shards, atomic writes. Through CliRunner-style calls of ``main`` and
through the installed entry point (subprocess)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from restore_cli.cli import main

from .conftest import TINY_REGISTRY

ENV_KEYS = ("HF_HUB_OFFLINE",)


def rgb(path: Path, w: int = 24, h: int = 16, mode: str = "RGB", seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    a = (rng.random((h, w, channels)) * 255).astype(np.uint8)
    Image.fromarray(a[..., 0] if channels == 1 else a, mode).save(path)
    return path


def run(argv: list[str], capsys) -> tuple[int, list[dict], str]:
    code = main(argv)
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return code, records, err


def test_one_file_goes_next_to_it(tmp_path, tiny_args, capsys) -> None:
    src = rgb(tmp_path / "photo.jpg")
    code, _, err = run(["sr", str(src), *tiny_args()], capsys)
    assert code == 0, err
    out = tmp_path / "photo_x4.png"
    assert Image.open(out).size == (96, 64)
    code, _, _ = run(["sr", str(src), "--scale", "2.5", *tiny_args()], capsys)
    assert code == 0 and Image.open(tmp_path / "photo_x2.5.png").size == (60, 40)


def test_one_file_with_output_file_and_format(tmp_path, tiny_args, capsys) -> None:
    src = rgb(tmp_path / "a.png")
    code, _, err = run(["sr", str(src), "-o", str(tmp_path / "big.webp"), *tiny_args()], capsys)
    assert code == 0, err
    assert Image.open(tmp_path / "big.webp").format == "WEBP"


def test_folder_mirrors_tree_skips_existing_and_reports_broken_files(
    tmp_path, tiny_args, capsys
) -> None:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    rgb(src / "a.PNG")
    rgb(src / "sub" / "b.jpg", seed=1)
    (src / "notes.txt").write_text("not an image")
    (src / "broken.png").write_bytes(rgb(tmp_path / "x.png").read_bytes()[:60])
    out = tmp_path / "out"
    code, records, err = run(["sr", str(src), "-o", str(out), "--json", *tiny_args()], capsys)
    assert code == 1
    status = {Path(r["input"]).name: r["status"] for r in records}
    assert status == {"a.PNG": "ok", "b.jpg": "ok", "broken.png": "error"}
    assert (out / "a.png").is_file() and (out / "sub" / "b.png").is_file()
    assert not (out / "broken.png").exists()
    assert "broken.png" in err and "Traceback" not in err
    broken = next(r for r in records if r["status"] == "error")
    assert broken["error"] and broken["output_size"] is None
    ok = next(r for r in records if r["status"] == "ok")
    assert ok["input_size"] == [24, 16] and ok["output_size"] == [96, 64] and ok["seed"] == 12345
    # Re-running resumes: finished outputs are skipped, the model is not needed for them.
    (src / "broken.png").unlink()
    mtime = (out / "a.png").stat().st_mtime_ns
    code, records, _ = run(["sr", str(src), "-o", str(out), "--json", *tiny_args()], capsys)
    assert code == 0 and {r["status"] for r in records} == {"skipped"}
    assert (out / "a.png").stat().st_mtime_ns == mtime
    code, records, _ = run(
        ["sr", str(src), "-o", str(out), "--json", "--overwrite", *tiny_args()], capsys
    )
    assert code == 0 and {r["status"] for r in records} == {"ok"}


def test_fail_fast_stops_at_first_error(tmp_path, tiny_args, capsys) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.png").write_bytes(b"garbage")
    rgb(src / "b.png")
    code, records, _ = run(
        ["sr", str(src), "-o", str(tmp_path / "o"), "--json", "--fail-fast", *tiny_args()], capsys
    )
    assert code == 1 and [r["status"] for r in records] == ["error"]


def test_usage_errors_exit_2(tmp_path, tiny_args, capsys) -> None:
    a, b = rgb(tmp_path / "a.png"), rgb(tmp_path / "b.png")
    assert run(["sr", str(a), str(b), *tiny_args()], capsys)[0] == 2  # several inputs need -o DIR
    (tmp_path / "d").mkdir()
    rgb(tmp_path / "d" / "a.jpg")
    code, _, err = run(
        ["sr", str(a), str(tmp_path / "d"), "-o", str(tmp_path / "o"), *tiny_args()], capsys
    )
    assert code == 2 and "a.png" in err  # both would write o/a.png
    assert run(["sr", str(tmp_path / "missing.png"), *tiny_args()], capsys)[0] == 2
    assert run(["sr", str(a), "--scale", "-1", *tiny_args()], capsys)[0] == 2
    assert run(["sr", str(a), "--color-fix", "magic", *tiny_args()], capsys)[0] == 2
    assert run(["sr", str(a), "--bogus-option"], capsys)[0] == 2
    assert run(["face", str(a), "--upscale", "3"], capsys)[0] == 2  # only 1, 2 or 4
    assert run(["inpaint", str(a), *tiny_args("tiny-inpaint")], capsys)[0] == 2  # no --mask
    assert not list(tmp_path.glob("*_x4.png"))


def test_model_errors_exit_3(tmp_path, capsys, monkeypatch, weights) -> None:
    a = rgb(tmp_path / "a.png")
    code, _, err = run(["sr", str(a), "-m", "no-such-model"], capsys)
    assert code == 3 and "no-such-model" in err
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    code, _, err = run(["sr", str(a), "--offline", "--device", "cpu"], capsys)
    assert code == 3 and "restore models download realsr-v3" in err and "Traceback" not in err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"nonsense")
    code, _, err = run(
        ["sr", str(a), "--registry", str(TINY_REGISTRY), "-m", "tiny-sr", "--checkpoint", str(bad),
         "--autoencoder", str(weights("tiny-sr")[1])],
        capsys,
    )  # fmt: skip
    assert code == 3 and "bad.safetensors" in err


def test_alpha_gray_and_16_bit_survive(tmp_path, tiny_args, capsys) -> None:
    import png  # pypng

    rgba = rgb(tmp_path / "rgba.png", mode="RGBA")
    gray = rgb(tmp_path / "gray.png", mode="L")
    deep = tmp_path / "deep.png"
    a16 = (np.random.default_rng(3).random((16, 24 * 3)) * 65535).astype(np.uint16)
    png.Writer(24, 16, greyscale=False, bitdepth=16).write(deep.open("wb"), a16.tolist())
    out = tmp_path / "out"
    code, _, err = run(
        ["sr", str(rgba), str(gray), str(deep), "-o", str(out), *tiny_args()], capsys
    )
    assert code == 0, err
    assert Image.open(out / "rgba.png").mode == "RGBA"
    alpha_in = np.asarray(Image.open(rgba))[..., 3].astype(float)
    alpha_out = np.asarray(Image.open(out / "rgba.png"))[..., 3].astype(float)
    assert alpha_out.shape == (64, 96) and abs(alpha_out.mean() - alpha_in.mean()) < 10
    assert Image.open(out / "gray.png").mode in ("L", "I;16")
    info = png.Reader(filename=str(out / "deep.png")).read()[3]
    assert info["bitdepth"] == 16 and not info["greyscale"]


def test_exif_rotation_is_applied(tmp_path, tiny_args, capsys) -> None:
    src = tmp_path / "rot.jpg"
    im = Image.fromarray((np.random.default_rng(0).random((16, 24, 3)) * 255).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    im.save(src, exif=exif)
    code, _, err = run(["sr", str(src), *tiny_args()], capsys)
    assert code == 0, err
    out = Image.open(tmp_path / "rot_x4.png")
    assert out.size == (64, 96)
    assert out.getexif().get(0x0112, 1) == 1


def test_shards_partition_inputs(tmp_path, tiny_args, capsys) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(6):
        rgb(src / f"{i}.png", w=8, h=8, seed=i)
    seen = []
    for k in (1, 2, 3):
        code, records, _ = run(
            [
                "sr",
                str(src),
                "-o",
                str(tmp_path / "o"),
                "--json",
                "--shard",
                f"{k}/3",
                *tiny_args(),
            ],
            capsys,
        )
        assert code == 0
        seen += [Path(r["input"]).name for r in records]
    assert sorted(seen) == sorted(f"{i}.png" for i in range(6))
    assert (
        run(["sr", str(src), "-o", str(tmp_path / "o"), "--shard", "4/3", *tiny_args()], capsys)[0]
        == 2
    )


def test_inpaint_with_mask_folder_and_mismatched_mask(tmp_path, tiny_args, capsys) -> None:
    src, masks = tmp_path / "in", tmp_path / "masks"
    src.mkdir()
    masks.mkdir()
    rgb(src / "a.png", w=40, h=30)
    rgb(src / "b.png", w=40, h=30)
    m = np.zeros((30, 40), np.uint8)
    m[5:15, 5:20] = 255
    Image.fromarray(m).save(masks / "a.png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(masks / "b.png")
    code, records, err = run(
        [
            "inpaint",
            str(src),
            "--mask",
            str(masks),
            "-o",
            str(tmp_path / "o"),
            "--json",
            *tiny_args("tiny-inpaint"),
        ],
        capsys,
    )
    assert code == 1
    assert {Path(r["input"]).name: r["status"] for r in records} == {
        "a.png": "ok",
        "b.png": "error",
    }
    assert "b.png" in err and "10x10" in err
    out = np.asarray(Image.open(tmp_path / "o" / "a.png"))
    src_px = np.asarray(Image.open(src / "a.png"))
    assert np.array_equal(out[m == 0], src_px[m == 0])  # known pixels kept


def test_face_aligned(tmp_path, tiny_args, capsys) -> None:
    src = rgb(tmp_path / "f.png", w=64, h=64)
    code, _, err = run(["face", str(src), "--aligned", *tiny_args("tiny-face")], capsys)
    assert code == 0, err
    assert Image.open(tmp_path / "f_restored.png").size == (64, 64)


def test_info_models_and_version(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    code, records, _ = run(["info", "--json"], capsys)
    assert code == 0 and records[0]["auto_device"] in ("cpu", "cuda", "mps")
    assert records[0]["cache"] == str(tmp_path / "cache")
    code, records, _ = run(["models", "list", "--json"], capsys)
    names = {r["name"]: r for r in records}
    assert code == 0 and set(names) >= {"realsr-v1", "realsr-v2", "realsr-v3", "bicsr",
                                        "inpaint-imagenet", "inpaint-face", "faceir"}  # fmt: skip
    assert names["realsr-v3"]["steps"] == 4 and names["realsr-v1"]["steps"] == 15
    assert not names["realsr-v3"]["cached"] and "S-Lab" in names["realsr-v3"]["licence"]
    # one-step distilled models list the calls they make, FLUX-IR models where to get them
    assert names["sinsr-v1"]["steps"] == 1 and names["sinsr-v1"]["trained_steps"] == 15
    assert "CC BY-NC-SA" in names["sinsr-v1"]["licence"]
    flux = names["lowlight-lolv1"]
    assert flux["kind"] == "fluxir" and flux["steps"] == [1, 2, 10] and flux["added_steps"] == []
    assert "drive.google.com" in flux["where"] and "no licence" in flux["licence"]
    det = names["retinaface-resnet50"]
    assert det["kind"] == "detector" and det["size_mb"] == 104 and "MIT" in det["licence"]
    code, _, err = run(["models", "download", "lowlight-lolv1"], capsys)
    assert code == 2 and "restore models add lowlight-lolv1" in err
    assert main(["--version"]) == 0
    code, _, err = run(["models", "download", "realsr-v3", "--quiet"], capsys)
    assert code == 3  # no network here: a clear weights error, no traceback
    assert "Traceback" not in err


def test_models_convert(tmp_path, weights, capsys) -> None:
    import torch
    from safetensors.torch import load_file

    unet, _ = weights("tiny-sr")
    state = load_file(str(unet))
    pth = tmp_path / "x.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, pth)
    out = tmp_path / "x.safetensors"
    assert main(["models", "convert", str(pth), str(out)]) == 0
    assert set(load_file(str(out))) == set(state)
    assert main(["models", "convert", str(pth), str(out)]) == 2  # exists


def test_installed_entry_point_and_module(tmp_path, tiny_args) -> None:
    exe = shutil.which("restore", path=os.path.dirname(sys.executable))
    assert exe, "the console script is installed beside the interpreter"
    src = rgb(tmp_path / "p.png")
    res = subprocess.run(
        [exe, "sr", str(src), "--json", "--quiet", *tiny_args()], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    record = json.loads(res.stdout.strip().splitlines()[-1])
    assert record["status"] == "ok" and Path(record["output"]).is_file()
    res = subprocess.run(
        [sys.executable, "-m", "restore_cli", "--version"], capture_output=True, text=True
    )
    assert res.returncode == 0 and res.stdout.startswith("restore ")
    res = subprocess.run([exe, "sr", str(tmp_path / "nope.png")], capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr and res.stderr.count("\n") <= 2


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signals_stop_cleanly_without_partial_files(tmp_path, tiny_args, sig, code) -> None:
    """Ctrl-C or SIGTERM mid-batch: the exit code says so, finished outputs are whole images,
    no temporary or partial file is left, and a re-run resumes (skips what is done)."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(20):
        rgb(src / f"{i:02d}.png", w=48, h=48, seed=i)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "restore_cli", "sr", str(src), "-o", str(out), "--json",
           *tiny_args()]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()  # one image done: the batch is under way
    assert json.loads(first)["status"] == "ok"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    done = sorted(out.rglob("*"))
    assert all(p.suffix == ".png" and not p.name.startswith(".") for p in done), done
    assert 1 <= len(done) < 20
    for p in done:
        Image.open(p).load()  # complete files only
    res = subprocess.run([*cmd, "--quiet"], capture_output=True, text=True)
    records = [json.loads(line) for line in res.stdout.splitlines()]
    assert res.returncode == 0
    assert sum(r["status"] == "skipped" for r in records) == len(done)


def test_restore_file_api_for_scripts_and_workers(tmp_path, registry, weights) -> None:
    import restore_cli
    from restore_cli.errors import UsageError

    unet, ae = weights("tiny-sr")
    r = restore_cli.load(registry.get("tiny-sr"), checkpoint=unet, autoencoder=ae, device="cpu")
    src = rgb(tmp_path / "a.png", mode="RGBA")
    rec = restore_cli.restore_file(r, src, tmp_path / "out" / "a.png", seed=3)
    assert rec["status"] == "ok" and rec["output_size"] == [96, 64] and rec["seed"] == 3
    out = Image.open(tmp_path / "out" / "a.png")
    assert out.mode == "RGBA" and out.size == (96, 64)
    again = restore_cli.restore_file(r, src, tmp_path / "out" / "a.png")
    assert again["status"] == "skipped"
    assert (
        restore_cli.restore_file(r, src, tmp_path / "out" / "a.png", overwrite=True)["status"]
        == "ok"
    )
    broken = tmp_path / "broken.png"
    broken.write_bytes(src.read_bytes()[:100])
    rec = restore_cli.restore_file(r, broken, tmp_path / "out" / "broken.png")
    assert rec["status"] == "error" and "broken.png" in rec["error"]
    assert not (tmp_path / "out" / "broken.png").exists()
    with pytest.raises(UsageError):
        restore_cli.restore_file(r, src, src, overwrite=True)  # never over the input
    with pytest.raises(UsageError):
        restore_cli.restore_file(r, src, tmp_path / "x.xyz")


def test_rerun_with_output_folder_inside_the_input_folder_resumes(tmp_path, tiny_args, capsys):
    (tmp_path / "photos").mkdir()
    rgb(tmp_path / "photos" / "a.png")
    argv = ["sr", str(tmp_path / "photos"), "-o", str(tmp_path / "photos" / "up"), "--json"]
    code, records, err = run([*argv, *tiny_args()], capsys)
    assert code == 0 and [r["status"] for r in records] == ["ok"], err
    code, records, err = run([*argv, *tiny_args()], capsys)  # up/a.png is not taken as an input
    assert code == 0 and [r["status"] for r in records] == ["skipped"], err


def test_an_output_that_cannot_be_written_fails_alone(tmp_path, tiny_args, capsys) -> None:
    (tmp_path / "in" / "sub").mkdir(parents=True)
    rgb(tmp_path / "in" / "sub" / "x.png")
    rgb(tmp_path / "in" / "y.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sub").write_text("a file where the folder should go")
    argv = ["sr", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--json", *tiny_args()]
    code, records, err = run(argv, capsys)
    assert code == 1 and [r["status"] for r in records] == ["error", "ok"]
    assert "cannot write" in records[0]["error"] and "folder" in records[0]["error"]
    assert (tmp_path / "out" / "y.png").is_file() and "Traceback" not in err


def test_steps_timesteps_and_eta_from_the_command_line(tmp_path, tiny_args, capsys) -> None:
    src = rgb(tmp_path / "a.png")
    outs = []
    for i, extra in enumerate((["--steps", "2", "--eta", "0"], ["--timesteps", "2,0", "--eta", "0"],
                               ["--steps", "2", "--eta", "0", "--seed", "99"], [])):  # fmt: skip
        out = tmp_path / f"o{i}.png"
        code, records, err = run(
            ["sr", str(src), "-o", str(out), "--json", *extra, *tiny_args()], capsys
        )
        assert code == 0, err
        outs.append(np.asarray(Image.open(out)))
        # each record names the trajectory that made its output (tiny-sr: 4 trained steps)
        expect = ([2, 0], 0.0) if extra else ([3, 2, 1, 0], 1.0)
        assert (records[0]["timesteps"], records[0]["eta"]) == expect
    assert np.array_equal(
        outs[0], outs[1]
    )  # --steps 2 of 4 trained steps: the reference rule keeps 2,0
    assert not np.array_equal(outs[0], outs[3])  # fewer steps, another result
    assert run(["sr", str(src), "--eta", "2", *tiny_args()], capsys)[0] == 2
    assert run(["sr", str(src), "--steps", "9", *tiny_args()], capsys)[0] == 2


def test_verbose_lines_escape_control_characters_in_file_names(tmp_path, tiny_args, capsys):
    """`--verbose` names every file it made or skipped: a name holding an ESC sequence and a
    newline is shown escaped, on one line, so it cannot restyle or forge terminal output."""
    hostile = "a\x1b[31m\nb"
    src = rgb(tmp_path / f"{hostile}.png")
    out = tmp_path / f"{hostile}.out.png"
    argv = ["sr", str(src), "-o", str(out), "--verbose", *tiny_args()]
    for expect in ("->", "skipped"):  # made, then skipped on the rerun
        code, _, err = run(argv, capsys)
        assert code == 0, err
        assert "\x1b" not in err and "a\\x1b[31m\\x0ab" in err, err
        assert any(expect in line and "a\\x1b" in line for line in err.splitlines()), err


@pytest.mark.parametrize(
    "argv", [["--help"], ["--version"], ["models", "list"], ["models", "list", "--json"]]
)
def test_commands_that_need_no_model_do_not_import_torch(argv, tmp_path) -> None:
    """`restore --help`, `--version` and `models list` answer without loading torch (seconds of
    start-up): a module-level torch import creeping into their path fails here, not in a timing."""
    import subprocess
    import sys

    code = (
        "import sys\nfrom restore_cli.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "sys.stderr.write('TORCH=' + str('torch' in sys.modules))\n"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "XDG_CACHE_HOME": str(tmp_path)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert res.stderr.endswith("TORCH=False"), res.stderr[-2000:]
