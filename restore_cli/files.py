"""Which files to restore, where each result goes, which share a machine takes, and masks.

Nothing here decodes pixels: inputs are chosen by extension, and every naming problem (clashes,
overwriting an input, a missing ``-o DIR``, a suffix that is a path) is raised as a UsageError
before any work starts. Names shown to a person go through :func:`printable` first.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import storage
from .errors import InputError, OutputError, UsageError
from .intake import printable, special_file
from .storage import Url

# What each writable extension is written as (Pillow's format names).
FORMAT_BY_SUFFIX = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
}
# Read (by content, whatever the extension says) but not written: outputs of these are PNG.
READ_ONLY_SUFFIXES = frozenset({".gif", ".jfif", ".jpe", ".ppm", ".pgm", ".pnm"})
WRITABLE_SUFFIXES = frozenset(FORMAT_BY_SUFFIX)  # matched case-insensitively
IMAGE_SUFFIXES = WRITABLE_SUFFIXES | READ_ONLY_SUFFIXES  # what folders are searched for
FORMATS = ("png", "jpg", "webp", "same")
MASK_NAMES = ("{stem}", "{stem}_mask", "{stem}-mask", "{stem}.mask")  # tried in this order


@dataclass(frozen=True)
class InputItem:
    path: Path  # the file (a storage.Url for s3://... and other fsspec URLs)
    rel: Path  # relative to the input folder it came from; just the name for a file argument
    output: Path | None = None  # where a --files-from JSON line sends it (else planned from -o)
    mask: Path | None = None  # its mask, from a --files-from JSON line


@dataclass(frozen=True)
class Ignored:
    """A file that is not restored, and why: "not an image", "a named pipe (FIFO)", ..."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return printable(self.path)


@dataclass(frozen=True)
class Job:
    input: InputItem
    output: Path
    root: Path | None = None  # the output folder (-o DIR) the output must stay inside


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


# --- inputs ------------------------------------------------------------------------------------


def find_inputs(
    args: Sequence[Path], *, files_from: Path | None = None, skip: Path | str | None = None
) -> tuple[list[InputItem], list[Ignored]]:
    """(images, ignored files with the reason) named by ``args`` and the list ``files_from``.

    Files are chosen by extension; named pipes, sockets and device files are ignored whatever
    their name (reading them would hang), and so is every file without an image extension.

    Folders are searched recursively in sorted order, skipping hidden files and folders (names
    starting with "."); symlinked folders are not followed. ``files_from`` is a text file ("-"
    for stdin) with one path per line, relative to the current folder; blank lines and lines
    starting with "#" are skipped. A path that does not exist is a UsageError. A file reached twice
    is kept once, where first seen. The folder ``skip`` (the output folder, which may lie inside an
    input folder) is not searched, so a second run resumes instead of taking outputs for inputs.
    """
    named: list[tuple[Path, str | None, dict]] = [(storage.location(a), None, {}) for a in args]
    if files_from is not None:
        named += _listed(storage.location(files_from))
    items: list[InputItem] = []
    ignored: list[Ignored] = []
    seen: set[Path] = set()
    for arg, origin, given in named:
        if not arg.exists():
            where = f" (listed in {origin})" if origin else ""
            raise UsageError(f"{printable(arg)}: no such file or folder{where}", "check the path")
        if not arg.is_dir():
            found = [(arg, Path(arg.name))]
        elif given:
            raise UsageError(
                f"{printable(arg)}: is a folder ({origin}), but the line names its output or mask",
                "list each file of the folder on its own line",
            )
        else:
            found = storage.walk(arg, skip) if isinstance(arg, Url) else _walk(arg, skip)
        for path, rel in found:
            if (kind := _special(path)) is not None:
                ignored.append(Ignored(path, kind))
            elif not is_image(path):
                ignored.append(Ignored(path, "not an image"))
            elif (key := path.resolve()) not in seen:
                seen.add(key)
                items.append(InputItem(path, Path(rel), **given))
    return items, ignored


def _special(path: Path) -> str | None:
    if isinstance(path, Url):
        return None  # an object in a store is always a plain file
    try:
        return special_file(os.stat(path).st_mode)
    except OSError:  # a broken link, say: reading it reports the problem for that file
        return None


def _listed(files_from: Path) -> list[tuple[Path, str, dict]]:
    """Paths in a list file, each with where it came from (for error messages) and what a JSON
    line gives besides the input (``output``, ``mask``)."""
    if str(files_from) == "-":
        text, name = sys.stdin.read(), "stdin"
    else:
        try:
            text, name = files_from.read_text(encoding="utf-8"), str(files_from)
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(
                f"{printable(files_from)}: cannot read the list of files ({printable(str(e))})",
                "pass a UTF-8 text file with one path per line",
            ) from e
    lines = enumerate(text.splitlines(), start=1)
    return [
        _listed_line(line.strip(), f"{printable(name)} line {n}")
        for n, line in lines
        if line.strip() and not line.lstrip().startswith("#")
    ]


def _listed_line(line: str, origin: str) -> tuple[Path, str, dict]:
    """A path, or a JSON object ``{"input": ..., "output": ..., "mask": ...}`` (output and mask
    optional; as a JSON-lines listing or a ``--manifest`` of an earlier run holds them)."""
    if not line.startswith("{"):
        return storage.location(line), origin, {}
    try:
        entry = json.loads(line)
        given = {k: storage.location(entry[k]) for k in ("output", "mask") if entry.get(k)}
        return storage.location(entry["input"]), origin, given
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(
            f"{origin}: not a path nor a JSON object with an input ({printable(str(e))})",
            'write one path, or {"input": "a.png", "output": "out/a.png"}, per line',
        ) from e


def _walk(folder: Path, skip: Path | str | None = None) -> list[tuple[Path, Path]]:
    """(file, path relative to ``folder``) for every visible file below ``folder``, sorted, leaving
    out the folder ``skip``."""
    skipped = Path(skip).resolve() if skip is not None else None
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [
            d
            for d in dirs
            if not d.startswith(".") and (skipped is None or (Path(root) / d).resolve() != skipped)
        ]
        for name in files:
            if not name.startswith("."):
                path = Path(root) / name
                found.append((path, path.relative_to(folder)))
    return sorted(found, key=lambda pair: pair[1].parts)


# --- outputs -----------------------------------------------------------------------------------


def plan_outputs(
    items: Sequence[InputItem],
    *,
    output: Path | str | None,
    default_suffix: str,
    fmt: str = "png",
    suffix: str | None = None,
    several: bool,
) -> list[Job]:
    """Pair each input with the file it will be written to; every naming problem is a UsageError.

    One input, no ``output``: next to it as ``<stem><suffix or default_suffix>.<fmt>``. One input
    and ``output`` a file name: exactly there, the format from its extension. Otherwise
    ``output`` is a folder (required when ``several``; a str ending in a path separator, or an
    existing folder, counts as one): each input's ``rel`` mirrored under it, same stem, plus
    ``suffix`` if given. ``fmt`` "same" keeps a writable input extension (lower-cased), else png.
    Pass ``output`` as the user typed it (str) so a trailing "/" still marks a folder. A
    ``suffix`` holding a path separator or ".." would write outside the folder: a UsageError.
    """
    _check_suffix(suffix)
    if fmt.lower().lstrip(".") not in {*FORMATS, "jpeg", "tif", "tiff", "bmp"}:
        raise UsageError(f"unknown output format {fmt!r}", "use one of " + ", ".join(FORMATS))
    fmt = fmt.lower().lstrip(".")
    if not items:
        return []
    several = several or len(items) > 1
    listed = all(item.output is not None for item in items)  # a JSON listing names every output
    folder = None if listed and output is None else _as_folder(output, several, len(items))
    jobs = []
    for item in items:
        ext = _extension(item, fmt)
        if item.output is not None:
            jobs.append(Job(item, _listed_output(item.output)))
            continue
        if folder is not None:
            name = item.rel.stem + (suffix or "") + ext
            target = folder / item.rel.parent / name
        elif output is not None:
            target = storage.location(output)
        else:
            name = item.path.stem + (default_suffix if suffix is None else suffix) + ext
            target = item.path.with_name(name)
        jobs.append(Job(item, target, folder))
    _check_targets(jobs)
    return jobs


def _listed_output(output: Path) -> Path:
    if output.suffix.lower() not in WRITABLE_SUFFIXES:
        raise UsageError(
            f"{printable(output)}: cannot write images with extension {printable(output.suffix) or '(none)'!r}",
            "use one of " + ", ".join(sorted(WRITABLE_SUFFIXES)),
        )
    return output


def _check_suffix(suffix: str | None) -> None:
    seps = {"/", "\\", os.sep, os.altsep or "/", "\0"}
    if suffix is not None and (".." in suffix or any(sep in suffix for sep in seps)):
        raise UsageError(
            f"suffix {printable(suffix)!r} holds a path separator or '..'",
            "use a plain name ending, such as _restored",
            option="suffix",
        )


def ensure_output_folder(job: Job) -> None:
    """Create the folder ``job.output`` goes in. OutputError if it is, or would be, reached through
    a link that leads out of the output folder ``job.root``: checked before creating it and again
    after, so a link made in the meantime is caught before anything is written."""
    _check_inside(job)
    job.output.parent.mkdir(parents=True, exist_ok=True)
    _check_inside(job)


def _check_inside(job: Job) -> None:
    if job.root is None:
        return
    root, real = job.root.resolve(), job.output.parent.resolve()
    if real != root and root not in real.parents:
        raise OutputError(
            f"{printable(job.output)}: a link in the output folder leads out of it, to "
            f"{printable(real)}",
            f"remove the link from {printable(job.root)}, or choose another output folder",
        )


def _as_folder(output: Path | str | None, several: bool, count: int) -> Path | None:
    """The output folder, or None for "next to the input" / "exactly this file"."""
    if output is None:
        if several:
            raise UsageError(
                f"{count} inputs need an output folder",
                "pass -o DIR; results keep their names and sub-folders there",
            )
        return None
    text = str(output)
    path = storage.location(output)
    if text.endswith(("/", os.sep)) or path.is_dir():
        return path
    if several:
        if path.exists():
            raise UsageError(
                f"-o {printable(path)}: is a file, but {count} inputs need a folder", "pass -o DIR"
            )
        if is_image(path):
            raise UsageError(
                f"-o {printable(path)}: looks like a file name, but there are {count} inputs",
                f"pass a folder, e.g. -o {printable(path.with_suffix(''))}/",
            )
        return path
    if path.suffix.lower() not in WRITABLE_SUFFIXES:
        raise UsageError(
            f"-o {printable(path)}: cannot write images with extension "
            f"{printable(path.suffix) or '(none)'!r}",
            "use one of "
            + ", ".join(sorted(WRITABLE_SUFFIXES))
            + ", or end the path with / for a folder",
        )
    return None


def _extension(item: InputItem, fmt: str) -> str:
    if fmt == "same":
        ext = item.path.suffix.lower()
        return ext if ext in WRITABLE_SUFFIXES else ".png"
    return "." + fmt


def _check_targets(jobs: Sequence[Job]) -> None:
    """No two inputs may write the same file (compared case-insensitively, as on macOS and
    Windows), and no output may replace an input."""
    by_key: dict[str, list[Job]] = {}
    for job in jobs:
        by_key.setdefault(os.path.abspath(job.output).casefold(), []).append(job)
    clashes = [group for group in by_key.values() if len(group) > 1]
    if clashes:
        lines = [
            f"{printable(group[0].output)} <- "
            + ", ".join(printable(job.input.path) for job in group)
            for group in clashes
        ]
        shown = "; ".join(lines[:5]) + (f"; and {len(lines) - 5} more" if len(lines) > 5 else "")
        raise UsageError(
            f"several inputs would write the same output: {shown}",
            "rename the inputs, or pass --suffix / a different --format to tell them apart",
        )
    inputs = {job.input.path.resolve() for job in jobs}
    input_ids = {_file_id(job.input.path) for job in jobs}  # catches links, and case-insensitive
    for job in jobs:  # file systems where "A.PNG" is "a.png"
        if job.output.resolve() in inputs or _file_id(job.output) in input_ids - {None}:
            raise UsageError(
                f"{printable(job.output)}: writing there would overwrite the input",
                "choose another -o, or pass --suffix",
            )


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _same_file(a: Path, b: Path) -> bool:
    return (id_a := _file_id(a)) is not None and id_a == _file_id(b)


# --- shards ------------------------------------------------------------------------------------


def shard(items: Sequence[InputItem], spec: str) -> list[InputItem]:
    """The items of shard K of N (``spec`` "K/N", 1-based), keeping their order.

    An item's shard depends only on its ``rel`` path (sha1, not Python's salted hash), so every
    machine agrees and adding files never moves the others.
    """
    k, n = _parse_shard(spec)
    return [item for item in items if _shard_of(item.rel, n) == k - 1]


def _parse_shard(spec: str) -> tuple[int, int]:
    try:
        k_text, n_text = spec.split("/")
        k, n = int(k_text), int(n_text)
    except ValueError:
        k = n = 0
    if not 1 <= k <= n:
        raise UsageError(
            f"--shard {spec!r}: expected K/N with 1 <= K <= N",
            "e.g. --shard 2/4 runs the second quarter of the inputs",
        )
    return k, n


def _shard_of(rel: Path, n: int) -> int:
    digest = hashlib.sha1(rel.as_posix().encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % n


# --- masks -------------------------------------------------------------------------------------


def find_mask(mask: Path, item: InputItem) -> Path:
    """The mask for ``item``: ``mask`` itself if it is a file; for a folder, in this order:

    1. the same relative path (``masks/sub/a.png`` for ``photos/sub/a.png``);
    2. in the same sub-folder, the same stem (or ``<stem>_mask``, ``-mask``, ``.mask``) with any
       image extension;
    3. the same names anywhere in the folder, if only one file has the first that matches.

    Several candidates at the first step that finds any is an InputError, as is none at all.

    The image itself is never its own mask (for masks kept beside the photos).
    """
    mask = Path(mask)
    if mask.is_file():
        return mask
    if not mask.is_dir():
        raise UsageError(
            f"{printable(mask)}: no such mask file or folder", "check the path", option="mask"
        )
    exact = mask / item.rel
    if exact.is_file() and is_image(exact) and not _same_file(exact, item.path):
        return exact
    stem = item.rel.stem
    near = _images_in(mask / item.rel.parent, item)
    for pattern in MASK_NAMES:
        hits = [p for p in near if p.stem == pattern.format(stem=stem)]
        if hits:
            return _one(hits, item, mask)
    anywhere = list(_all_images(mask, item))
    for pattern in MASK_NAMES:
        hits = [p for p in anywhere if p.stem == pattern.format(stem=stem)]
        if hits:
            return _one(hits, item, mask)
    return _one([], item, mask)


def _images_in(folder: Path, item: InputItem) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and is_image(p)
        and not p.name.startswith(".")
        and not _same_file(p, item.path)
    )


def _all_images(folder: Path, item: InputItem) -> Iterator[Path]:
    for path, _ in _walk(folder):
        if is_image(path) and not _same_file(path, item.path):
            yield path


def _one(hits: list[Path], item: InputItem, mask: Path) -> Path:
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise InputError(
            f"{printable(item.path)}: no mask for it in {printable(mask)}",
            f"add {printable(mask / item.rel.parent / item.rel.stem)}.png (white = area to fill)",
        )
    names = ", ".join(printable(p) for p in hits[:5])
    raise InputError(
        f"{printable(item.path)}: several possible masks in {printable(mask)}: {names}",
        "keep one mask per image, at the same relative path as the image",
    )
