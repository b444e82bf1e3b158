"""Checking a ``.pth`` before torch reads it: nothing compressed, nothing larger than it declares.

``torch.save`` writes a zip whose members are stored, not compressed: ``ARCHIVE/data.pkl`` (the
pickled structure, which declares the dtype and element count of every storage) and one
``ARCHIVE/data/KEY`` record per storage, exactly as large as that storage. A member that is
compressed, a record larger (or smaller) than the storage it declares, a record no tensor declares
or a large member of another kind is refused before anything is loaded, so a small file can make
us neither decompress nor allocate gigabytes. The declarations are read with torch's own
weights-only unpickler (no pickled code runs) onto ``meta`` storages, which take no memory.

The legacy format (torch < 1.6: pickles one after another, then the raw storages) is checked the
same way: its declared storages must fit in the file. The older tar format is refused.
"""

from __future__ import annotations

import io
import tarfile
import warnings
import zipfile
from pathlib import Path
from typing import IO

import torch
from torch import _weights_only_unpickler as weights_only

from ..errors import WeightsError

MAX_PICKLE = 64 << 20  # bytes of data.pkl; a state dict of 10,000 tensors needs about 1 MB
MAX_OTHER = 1 << 20  # any other member that is not a tensor record (version, byteorder, ...)
_HINT = "this is not a checkpoint as torch.save writes it; re-download it or use a trusted file"


def check(path: Path, zipped: bool) -> None:
    """Raise :class:`WeightsError` if ``path`` (a zip ``.pth`` when ``zipped``) could make torch
    decompress or allocate more than the file holds."""
    with warnings.catch_warnings():  # torch.load warns about the pickle protocol again later
        warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
        if zipped:
            _check_zip(path)
        else:
            _check_legacy(path)


def _check_zip(path: Path) -> None:
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
        pickles = [m for m in members if m.filename.endswith("data.pkl")]
        if len(pickles) != 1 or pickles[0].filename.count("/") != 1:
            _refuse(path, "has no single ARCHIVE/data.pkl")
        prefix = pickles[0].filename[: -len("data.pkl")]
        for m in members:
            if m.compress_type != zipfile.ZIP_STORED or m.compress_size != m.file_size:
                _refuse(path, f"member {m.filename!r} is compressed")
            if not m.filename.startswith(prefix):
                _refuse(path, f"member {m.filename!r} lies outside {prefix!r}")
        if pickles[0].file_size > MAX_PICKLE:
            _refuse(path, f"its data.pkl holds {pickles[0].file_size} bytes")
        declared = _declared_zip(archive.read(pickles[0]))
        records = {}
        for m in members:
            name = m.filename[len(prefix) :]
            if name.startswith("data/"):
                records[name[5:]] = m.file_size
            elif m is not pickles[0] and m.file_size > MAX_OTHER:
                _refuse(path, f"member {m.filename!r} holds {m.file_size} bytes")
    for key, size in records.items():
        if key not in declared:
            _refuse(path, f"record data/{key} ({size} bytes) belongs to no tensor")
        if size != declared[key]:
            more = "larger" if size > declared[key] else "smaller"
            _refuse(path, f"record data/{key} holds {size} bytes, {more} than the {declared[key]} "
                    "bytes its tensors declare")  # fmt: skip
    if missing := sorted(set(declared) - set(records)):
        _refuse(path, f"tensors declare storage {missing[0]!r} but it has no record")


def _check_legacy(path: Path) -> None:
    try:
        with tarfile.open(path, mode="r:"):
            _refuse(path, "is in the old tar format (torch < 0.4)")
    except tarfile.TarError:
        pass
    size = path.stat().st_size
    with path.open("rb") as fh:
        for _ in range(3):  # magic number, protocol version, system info
            _unpickler(fh).load()
        declared: dict[str, int] = {}
        main = _unpickler(fh)
        main.persistent_load = lambda pid: _storage(pid, 6, declared)
        main.load()
        _unpickler(fh).load()  # the storage keys
        rest = size - fh.tell()
    need = sum(declared.values()) + 8 * len(declared)  # each storage: 8-byte length, then data
    if need > rest:
        _refuse(path, f"its tensors declare {need} bytes but only {rest} follow")


def _declared_zip(data: bytes) -> dict[str, int]:
    """Bytes of every storage that ``data.pkl`` declares, by record key."""
    declared: dict[str, int] = {}
    unpickler = _unpickler(io.BytesIO(data))
    unpickler.persistent_load = lambda pid: _storage(pid, 5, declared)
    unpickler.load()
    return declared


def _unpickler(fh: IO[bytes]) -> weights_only.Unpickler:
    return weights_only.Unpickler(fh, encoding="utf-8")


def _storage(pid: object, fields: int, declared: dict[str, int]) -> torch.storage.TypedStorage:
    """Record what a persistent id declares; answer with a storage on ``meta`` of that size."""
    if not (isinstance(pid, tuple) and len(pid) == fields and pid[0] == "storage"):
        raise ValueError(f"unexpected persistent id {str(pid)[:80]}")
    storage_type, key, numel = pid[1], pid[2], pid[4]
    if storage_type is torch.UntypedStorage:
        dtype = torch.uint8
    else:
        dtype = getattr(storage_type, "dtype", None)
    if not isinstance(dtype, torch.dtype) or not isinstance(numel, int) or numel < 0:
        raise ValueError(f"storage {str(key)[:40]!r} declares an invalid type or size")
    nbytes = numel * dtype.itemsize
    key = str(key)
    declared[key] = max(declared.get(key, 0), nbytes)
    meta = torch.UntypedStorage(nbytes, device="meta")
    return torch.storage.TypedStorage(wrap_storage=meta, dtype=dtype, _internal=True)


def _refuse(path: Path, why: str) -> None:
    raise WeightsError(f"{path}: not a safe checkpoint ({why})", _HINT)
