"""Malformed and hostile checkpoints: every failure is one WeightsError; nothing is decompressed or
allocated beyond what the file holds. Includes a bounded, seeded mutation fuzz of both formats."""

from __future__ import annotations

import io
import json
import random
import struct
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as save_safetensors

from restore_cli.errors import EXIT_MODEL, WeightsError
from restore_cli.weights.checkpoints import load_into, read_state_dict

SMALL = {
    "conv.weight": torch.arange(48, dtype=torch.float32).reshape(4, 3, 2, 2) / 7,
    "conv.bias": torch.ones(4, dtype=torch.float16),
    "blocks.0.relative_position_index": torch.arange(9, dtype=torch.int64),
}


def _pth(obj: object, zipped: bool = True) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=zipped)
    return buf.getvalue()


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _rezip(data: bytes, change) -> bytes:
    """The members of a zip ``.pth`` written again, each through ``change(name, bytes)``, which
    returns (bytes, compression) or None to drop the member."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            got = change(info.filename, src.read(info))
            if got is not None:
                dst.writestr(info.filename, got[0], compress_type=got[1])
    return out.getvalue()


def _refused(path: Path, match: str) -> WeightsError:
    with pytest.raises(WeightsError, match=match) as info:
        read_state_dict(path)
    assert info.value.exit_code == EXIT_MODEL and "\n" not in str(info.value)
    return info.value


# --- item 4: no decompression, no allocation beyond the file --------------------------------


def test_compressed_member_is_refused_before_loading(tmp_path: Path) -> None:
    bomb = {"w": torch.zeros(1 << 22)}  # 16 MB of zeros: a few kB compressed

    def deflate(name: str, data: bytes):
        return data, zipfile.ZIP_DEFLATED if name.endswith("/data/0") else zipfile.ZIP_STORED

    path = _write(tmp_path, "bomb.pth", _rezip(_pth(bomb), deflate))
    assert path.stat().st_size < 100_000
    _refused(path, "member .*data/0' is compressed")


@pytest.mark.parametrize(
    ("how", "said"),
    [("larger", "larger than the 192 bytes"), ("smaller", "smaller than"), ("extra", "no tensor"),
     ("missing", "has no record"), ("other", "holds 2000000 bytes")],
)  # fmt: skip
def test_records_must_match_what_the_tensors_declare(tmp_path: Path, how: str, said: str) -> None:
    data = _pth({"w": torch.ones(48)})  # one storage, data/0, 192 bytes

    def change(name: str, body: bytes):
        if name.endswith("/data/0"):
            if how == "missing":
                return None
            body = {"larger": body + bytes(1 << 20), "smaller": body[:100]}.get(how, body)
        return body, zipfile.ZIP_STORED

    _refused(_write(tmp_path, "x.pth", _grow(_rezip(data, change), how)), said)


def _grow(data: bytes, how: str) -> bytes:
    if how not in ("extra", "other"):
        return data
    buf = io.BytesIO(data)
    with zipfile.ZipFile(buf, "a") as z:
        z.writestr("archive/data/7" if how == "extra" else "archive/notes.bin", bytes(2_000_000))
    return buf.getvalue()


def test_legacy_pth_declaring_more_than_it_holds_is_refused(tmp_path: Path) -> None:
    data = _pth({"w": torch.ones(1000)}, zipped=False)
    assert read_state_dict(_write(tmp_path, "ok.pth", data))["w"].shape == (1000,)
    _refused(_write(tmp_path, "cut.pth", data[:-3000]), "declare 4008 bytes")


def test_tar_format_is_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("storages")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"\x80\x02K\x01"))
    _refused(_write(tmp_path, "old.pth", buf.getvalue()), "tar format")


def test_huge_declared_safetensors_size_is_a_weights_error(tmp_path: Path) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [1 << 40], "data_offsets": [0, 1 << 42]}})
    data = struct.pack("<Q", len(header)) + header.encode() + bytes(16)
    _refused(_write(tmp_path, "huge.safetensors", data), "not a readable checkpoint")
    data = struct.pack("<Q", 1 << 60) + b"{}"
    _refused(_write(tmp_path, "header.safetensors", data), "not a readable checkpoint")


# --- item 3: wrong dtypes and junk -----------------------------------------------------------


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_complex_weights_are_refused_when_read(tmp_path: Path, fmt: str) -> None:
    state = {"w": torch.ones(3, dtype=torch.complex64)}
    if fmt == "safetensors":
        try:
            data = save_safetensors(state)
        except Exception:  # noqa: BLE001 - this safetensors cannot even write complex numbers
            pytest.skip("safetensors has no complex dtype here")
    else:
        data = _pth(state)
    _refused(_write(tmp_path, f"c.{fmt}", data), "dtype torch.complex64")


def test_quantised_and_sparse_tensors_are_refused(tmp_path: Path) -> None:
    sparse = {"w": torch.eye(3).to_sparse()}
    _refused(_write(tmp_path, "s.pth", _pth(sparse)), "not a plain dense tensor|not a readable")


def test_integer_weights_do_not_fit_a_float_module(tmp_path: Path) -> None:
    module = torch.nn.Linear(3, 2, device="meta")
    path = _write(
        tmp_path, "i.safetensors", save_safetensors({"weight": torch.ones(2, 3, dtype=torch.int32),
                                                     "bias": torch.zeros(2)})
    )  # fmt: skip
    with pytest.raises(WeightsError, match="1 of the wrong dtype: weight torch.int32"):
        load_into(module, read_state_dict(path), str(path))


@pytest.mark.parametrize(
    ("obj", "said"),
    [([torch.ones(2)], "holds no state dict"), ({"step": 3, "name": "x"}, "holds no tensors"),
     ({"state_dict": {"a": [1, 2], "b": "c"}}, "holds no tensors"), (7, "holds no state dict")],
)  # fmt: skip
def test_non_tensor_junk_is_a_weights_error(tmp_path: Path, obj: object, said: str) -> None:
    _refused(_write(tmp_path, "j.pth", _pth(obj)), said)


# --- the fuzz --------------------------------------------------------------------------------


def _mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(6)
        at = rng.randrange(len(out)) if out else 0
        if kind == 0 and out:  # flip bits
            out[at] ^= 1 << rng.randrange(8)
        elif kind == 0:
            continue
        elif kind == 1:  # cut the end off
            del out[at:]
        elif kind == 2:  # overwrite a run with random bytes
            n = rng.randint(1, 64)
            out[at : at + n] = rng.randbytes(n)
        elif kind == 3:  # insert random bytes
            out[at:at] = rng.randbytes(rng.randint(1, 32))
        elif kind == 4:  # a huge size or count
            out[at : at + 8] = rng.choice([b"\xff" * 8, struct.pack("<Q", 1 << 40), b"\x7f" * 8])
        else:  # duplicate a slice
            n = rng.randint(1, 256)
            out[at:at] = out[at : at + n]
    return bytes(out)


@pytest.mark.parametrize("fmt", ["pth", "legacy.pth", "safetensors"])
def test_fuzzed_checkpoints_give_tensors_or_one_weights_error(tmp_path: Path, fmt: str) -> None:
    if fmt == "safetensors":
        valid = save_safetensors({k: v.contiguous() for k, v in SMALL.items()})
    else:
        valid = _pth({"state_dict": SMALL, "step": 3}, zipped=fmt == "pth")
    rng = random.Random(f"fuzz-{fmt}")
    path = tmp_path / f"f.{fmt.rsplit('.', 1)[-1]}"
    ends = time.monotonic() + 1.5  # a bounded budget per format; seeds repeat run to run
    tries = refused = 0
    while time.monotonic() < ends and tries < 2000:
        data = _mutate(valid, rng)
        path.write_bytes(data)
        tries += 1
        try:
            state = read_state_dict(path)
        except WeightsError as exc:
            refused += 1
            assert "\n" not in str(exc), exc
            continue
        except BaseException as exc:  # noqa: BLE001 - the point of the test
            pytest.fail(f"try {tries}: {type(exc).__name__}: {exc}")
        assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert tries >= 20 and refused > 0


def test_tied_weights_convert(tmp_path: Path) -> None:
    from restore_cli.weights.checkpoints import convert_to_safetensors

    shared = torch.arange(6.0)
    src = _write(tmp_path, "tied.pth", _pth({"a": shared, "b": shared, "c": shared[:3]}))
    out = read_state_dict(convert_to_safetensors(src, tmp_path / "tied.safetensors"))
    assert torch.equal(out["a"], out["b"]) and torch.equal(out["c"], shared[:3])
