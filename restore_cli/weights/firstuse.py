"""Trust on first use: a new download is checked to be the weights before its hash is recorded.

Without a pinned sha256 the first download is what every later run is checked against, so it must
be right: it has to read as a checkpoint and, where the caller says what it expects (the keys and
shapes of its network), fit it. Anything else (an HTML login or error page, an empty or short
body, someone else's model) is deleted and the error says what came instead.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import WeightsError
from .checkpoints import read_state_dict
from .urls import redact

Expect = Callable[[dict[str, torch.Tensor]], None]  # raises WeightsError if a state dict won't fit

_HINT = {
    "url": "check the URL (a private or moved file often answers with a login or error page) and "
    "retry; nothing was kept, or pass --checkpoint FILE",
    "hf": "check the repository, revision and file name (and HF_TOKEN for a gated repository) "
    "and retry; nothing was kept, or pass --checkpoint FILE",
}


def check(
    url: str, raw: Path, expect: Expect | None, keep: bool, remove: Callable[[Path], None]
) -> dict[str, torch.Tensor]:
    """The tensors of a new download, checked to be a checkpoint that fits ``expect``.

    One that is not is deleted (unless ``keep``: pinned, or another program's hf:// file) and the
    error says what came instead."""
    try:
        state = read_state_dict(raw)
    except WeightsError as exc:
        if keep:
            raise
        came = what_came(raw)
        if came is None:
            size = raw.stat().st_size
            came = f"got {size} bytes that are not a readable checkpoint ({_detail(exc)})"
        remove(raw)
        raise _not_weights(url, came) from None
    if expect is None:
        return state
    try:
        expect(state)
    except WeightsError as exc:
        if keep:
            raise
        remove(raw)
        raise _not_weights(
            url, f"got a checkpoint that does not fit the model ({_detail(exc)})"
        ) from None
    return state


def _not_weights(url: str, came: str) -> WeightsError:
    hint = _HINT["hf" if url.startswith("hf://") else "url"]
    return WeightsError(f"{redact(url)}: {came}; it was deleted", hint)


def _detail(exc: WeightsError) -> str:
    """What a checkpoint error says, without the path of the file that is now deleted."""
    detail = exc.message.split(": ", 1)[-1]
    return detail.removeprefix("not a readable checkpoint (").removesuffix(")") or detail


def what_came(path: Path) -> str | None:
    """What a download that is no checkpoint looks like: an HTML page, text, nothing at all."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(1024)
    except OSError:
        return None
    text = head.lstrip().lower()
    if size == 0:
        return "got an empty file"
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in text:
        return "got an HTML page (login or error page?)"
    if text.startswith(b"<?xml"):
        return "got an XML document (an error reply?)"
    if text[:1] in (b"{", b"[") and b"\0" not in head:
        return "got a JSON document (an error reply?)"
    if head and all(32 <= c < 127 or c in b"\t\r\n" for c in head):
        first = head.decode("ascii").strip().splitlines()[0][:60] if head.strip() else ""
        return f"got {size} bytes of text ({first!r})"
    return None
