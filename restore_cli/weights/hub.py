"""Files on the Hugging Face Hub, addressed as ``hf://[KINDs/]OWNER/REPO[@REVISION]/PATH``.

Downloads go through ``huggingface_hub`` into its own cache layout; progress is forwarded as byte
counts through a stand-in for tqdm.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

from huggingface_hub import hf_hub_download, try_to_load_from_cache

from ..errors import WeightsError
from .transfer import ProgressFn

_URI = re.compile(
    r"hf://(?:(?P<kind>model|dataset|space)s/)?(?P<repo>[^/@]+/[^/@]+)"
    r"(?:@(?P<rev>refs/pr/\d+|refs/convert/[\w.-]+|[^/]+))?/(?P<path>.+)"
)


@dataclass(frozen=True)
class HubRef:
    """A file on the Hub: ``hf://[KINDs/]OWNER/REPO[@REVISION]/PATH``."""

    repo_id: str
    filename: str
    revision: str
    kind: str  # model, dataset or space


def parse(url: str) -> HubRef:
    match = _URI.fullmatch(url)
    if match is None:
        raise WeightsError(
            f"{url}: not a Hub file address", "write hf://OWNER/REPO[@REVISION]/PATH/IN/REPO"
        )
    revision = unquote(match["rev"]) if match["rev"] else "main"
    return HubRef(match["repo"], match["path"], revision, match["kind"] or "model")


def cached(ref: HubRef, cache_dir: Path) -> Path | None:
    """The cached file of ``ref``, or None; never touches the network."""
    # A lookup on disk only. Not hf_hub_download(local_files_only=True): in huggingface_hub 2.x that
    # still builds request headers, which fetches an agent registry from the Hub once per process.
    path = try_to_load_from_cache(
        ref.repo_id, ref.filename, cache_dir=cache_dir, revision=ref.revision, repo_type=ref.kind
    )
    return Path(path) if isinstance(path, str) else None


def fetch(
    url: str,
    ref: HubRef,
    cache_dir: Path,
    force: bool,
    progress: ProgressFn | None,
    retry_hint: str,
) -> Path:
    """Download ``ref`` at its revision into the Hub cache (``huggingface_hub``) and return its path."""
    try:
        path = hf_hub_download(
            ref.repo_id,
            ref.filename,
            revision=ref.revision,
            repo_type=ref.kind,
            cache_dir=cache_dir,
            force_download=force,
            tqdm_class=_bar_class(PurePosixPath(ref.filename).name, progress),
        )
    except Exception as exc:  # its errors come from requests, httpx or httpx2 by version
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise WeightsError(f"{url}: download failed ({reason})", retry_hint) from exc
    return Path(path)


def _bar_class(label: str, progress: ProgressFn | None) -> type:
    """A stand-in for tqdm for huggingface_hub to drive: forwards byte counts, draws nothing."""

    class _Bar:
        def __init__(self, *args: object, total: int | None = None, initial: int = 0, **kw: object):
            self.total, self.n = total, initial

        def update(self, n: float = 1) -> None:
            self.n += int(n)
            if progress is not None:
                progress(label, self.n, self.total)

        def update_transfer(self, n: float = 1) -> None:
            """Network bytes of a Xet download (the file's own bytes go through ``update``)."""

        def refresh(self, *args: object, **kw: object) -> None:
            """Nothing is drawn."""

        set_postfix_str = set_transfer_postfix_str = set_description = close = refresh

        def __enter__(self) -> _Bar:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    return _Bar
