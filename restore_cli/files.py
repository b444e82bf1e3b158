"""Which files to restore, where each result goes, which share a machine takes, and masks.

Nothing here decodes pixels: inputs are chosen by extension, and every naming problem (clashes,
overwriting an input, a missing ``-o DIR``) is raised as a UsageError before any work starts.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError, UsageError
from .imageio import FORMAT_BY_SUFFIX, READ_ONLY_SUFFIXES

WRITABLE_SUFFIXES = frozenset(FORMAT_BY_SUFFIX)  # matched case-insensitively
IMAGE_SUFFIXES = WRITABLE_SUFFIXES | READ_ONLY_SUFFIXES  # what folders are searched for
FORMATS = ("png", "jpg", "webp", "same")
MASK_NAMES = ("{stem}", "{stem}_mask", "{stem}-mask", "{stem}.mask")  # tried in this order


@dataclass(frozen=True)
class InputItem:
    path: Path  # the file
    rel: Path  # relative to the input folder it came from; just the name for a file argument


@dataclass(frozen=True)
class Job:
    input: InputItem
    output: Path


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


# --- inputs ------------------------------------------------------------------------------------


def find_inputs(
    args: Sequence[Path], *, files_from: Path | None = None, skip: Path | str | None = None
) -> tuple[list[InputItem], list[Path]]:
    """(images, ignored non-image files) named by ``args`` and the list ``files_from``.

    Folders are searched recursively in sorted order, skipping hidden files and folders (names
    starting with "."); symlinked folders are not followed. ``files_from`` is a text file ("-"
    for stdin) with one path per line, relative to the current folder; blank lines and lines
    starting with "#" are skipped. A path that does not exist is a UsageError. A file reached twice
    is kept once, where first seen. The folder ``skip`` (the output folder, which may lie inside an
    input folder) is not searched, so a second run resumes instead of taking outputs for inputs.
    """
    named = [(Path(arg), None) for arg in args]
    if files_from is not None:
        named += _listed(Path(files_from))
    items: list[InputItem] = []
    ignored: list[Path] = []
    seen: set[Path] = set()
    for arg, origin in named:
        if not arg.exists():
            where = f" (listed in {origin})" if origin else ""
            raise UsageError(f"{arg}: no such file or folder{where}", "check the path")
        found = _walk(arg, skip) if arg.is_dir() else [(arg, Path(arg.name))]
        for path, rel in found:
            if not is_image(path):
                ignored.append(path)
            elif (key := path.resolve()) not in seen:
                seen.add(key)
                items.append(InputItem(path, rel))
    return items, ignored


def _listed(files_from: Path) -> list[tuple[Path, str]]:
    """Paths in a list file, each with where it came from (for error messages)."""
    if str(files_from) == "-":
        text, name = sys.stdin.read(), "stdin"
    else:
        try:
            text, name = files_from.read_text(encoding="utf-8"), str(files_from)
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(
                f"{files_from}: cannot read the list of files ({e})",
                "pass a UTF-8 text file with one path per line",
            ) from e
    lines = enumerate(text.splitlines(), start=1)
    return [
        (Path(line.strip()), f"{name} line {n}")
        for n, line in lines
        if line.strip() and not line.lstrip().startswith("#")
    ]


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
    Pass ``output`` as the user typed it (str) so a trailing "/" still marks a folder.
    """
    if fmt.lower().lstrip(".") not in {*FORMATS, "jpeg", "tif", "tiff", "bmp"}:
        raise UsageError(f"unknown output format {fmt!r}", "use one of " + ", ".join(FORMATS))
    fmt = fmt.lower().lstrip(".")
    if not items:
        return []
    several = several or len(items) > 1
    folder = _as_folder(output, several, len(items))
    jobs = []
    for item in items:
        ext = _extension(item, fmt)
        if folder is not None:
            name = item.rel.stem + (suffix or "") + ext
            target = folder / item.rel.parent / name
        elif output is not None:
            target = Path(output)
        else:
            name = item.path.stem + (default_suffix if suffix is None else suffix) + ext
            target = item.path.with_name(name)
        jobs.append(Job(item, target))
    _check_targets(jobs)
    return jobs


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
    path = Path(output)
    if text.endswith(("/", os.sep)) or path.is_dir():
        return path
    if several:
        if path.exists():
            raise UsageError(
                f"-o {path}: is a file, but {count} inputs need a folder", "pass -o DIR"
            )
        if is_image(path):
            raise UsageError(
                f"-o {path}: looks like a file name, but there are {count} inputs",
                f"pass a folder, e.g. -o {path.with_suffix('')}/",
            )
        return path
    if path.suffix.lower() not in WRITABLE_SUFFIXES:
        raise UsageError(
            f"-o {path}: cannot write images with extension {path.suffix or '(none)'!r}",
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
            f"{group[0].output} <- " + ", ".join(str(job.input.path) for job in group)
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
                f"{job.output}: writing there would overwrite the input",
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
        raise UsageError(f"{mask}: no such mask file or folder", "check the --mask path")
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
            f"{item.path}: no mask for it in {mask}",
            f"add {mask / item.rel.parent / item.rel.stem}.png (white = area to fill)",
        )
    names = ", ".join(str(p) for p in hits[:5])
    raise InputError(
        f"{item.path}: several possible masks in {mask}: {names}",
        "keep one mask per image, at the same relative path as the image",
    )
