"""Registry values: wrong types, zero, negative or absurd sizes are one ModelError naming the file and
entry; a user file that changes built-in entries is reported."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import tomllib

from restore_cli.errors import EXIT_MODEL, ModelError
from restore_cli.registry import BUILTIN_REGISTRY, default_registry, load_registry

from .conftest import TINY_REGISTRY

TINY = tomllib.loads(TINY_REGISTRY.read_text())
BUILTIN = tomllib.loads(BUILTIN_REGISTRY.read_text())


def _value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return json.dumps(v)


def _entry(tmp_path: Path, table: str, name: str, entry: dict, base: dict = TINY) -> Path:
    """A user registry file holding one entry: ``base``'s ``[table.name]`` updated by ``entry``."""
    full = {**base.get(table, {}).get(name, {}), **entry}
    path = tmp_path / "user.toml"
    path.write_text(
        f"[{table}.{name}]\n" + "".join(f"{k} = {_value(v)}\n" for k, v in full.items())
    )
    return path


SCHEDULE = TINY["models"]["tiny-sr"]["schedule"]

BAD = [
    ("unets", "tiny-sr", {"image_size": 0}, "image_size = 0 is out of range"),
    ("unets", "tiny-sr", {"model_channels": "32"}, "model_channels must be a whole number, not '32'"),
    ("unets", "tiny-sr", {"model_channels": 10**7}, "out of range"),
    ("unets", "tiny-sr", {"channel_mult": 2}, "channel_mult must be a list of whole numbers"),
    ("unets", "tiny-sr", {"channel_mult": [], "num_res_blocks": []}, "must have 1 to 8 entries"),
    ("unets", "tiny-sr", {"channel_mult": [1, 2.5]}, "list of whole numbers"),
    ("unets", "tiny-sr", {"cond_mask": 1}, "cond_mask must be true or false"),
    ("unets", "tiny-sr", {"lq_size": 48}, "power of two"),
    ("unets", "tiny-sr", {"model_channels": 40}, "multiple of 32 (GroupNorm)"),
    ("unets", "tiny-sr", {"numel": 0}, "numel = 0 is out of range"),
    ("unets", "tiny-sr", {"window_size": -4}, "window_size = -4"),
    ("autoencoders", "tiny-f4", {"n_embed": -1}, "n_embed = -1 is out of range"),
    ("autoencoders", "tiny-f4", {"ch_mult": "1,1,2"}, "ch_mult must be a list"),
    ("autoencoders", "tiny-f4", {"url": 5}, "url must be a string"),
    ("models", "tiny-sr", {"scale": "4"}, "scale must be a whole number"),
    ("models", "tiny-sr", {"scale": 0}, "scale = 0 is out of range"),
    ("models", "tiny-sr", {"pad_multiple": -16}, "pad_multiple = -16"),
    ("models", "tiny-sr", {"unet": ["tiny-sr"]}, "unet must be a string"),
    ("models", "tiny-sr", {"schedule": 4}, "schedule must be a table"),
    ("models", "tiny-sr", {"schedule": {**SCHEDULE, "steps": -4}}, "steps = -4 is out of range"),
    ("models", "tiny-sr", {"schedule": {**SCHEDULE, "steps": 10**9}}, "steps = 1000000000"),
    ("models", "tiny-sr", {"schedule": {**SCHEDULE, "steps": 4.5}}, "steps must be a whole number"),
    ("models", "tiny-sr", {"schedule": {**SCHEDULE, "kappa": math.nan}}, "kappa must be a number"),
    ("models", "tiny-sr", {"schedule": {**SCHEDULE, "kappa": 0.0}}, "kappa = 0.0 is out of range"),
    ("models", "tiny-sr", {"schedule": {**SCHEDULE, "etas_end": 0.01}}, "etas_end must exceed"),
    ("models", "tiny-sr", {"sha256": "abc"}, "sha256 must be 64 hex digits"),
    ("models", "tiny-sr", {"input_size": 0}, "input_size = 0 is out of range"),
]  # fmt: skip


@pytest.mark.parametrize(("table", "name", "change", "said"), BAD, ids=[b[3][:30] for b in BAD])
def test_bad_values_are_one_model_error(
    tmp_path: Path, table: str, name: str, change: dict, said: str
) -> None:
    path = _entry(tmp_path, table, name, change)
    began = time.monotonic()
    with pytest.raises(ModelError) as info:
        load_registry([TINY_REGISTRY, path])
    assert time.monotonic() - began < 2
    message = info.value.message
    assert said in message, message
    assert str(path) in message and f"[{table}.{name}" in message
    assert info.value.exit_code == EXIT_MODEL and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "said"),
    [("models = 3\n", "[models]: must be a table"), ("[models]\ntiny-sr = 3\n", "[models.tiny-sr]")],
)  # fmt: skip
def test_entries_must_be_tables(tmp_path: Path, text: str, said: str) -> None:
    path = tmp_path / "user.toml"
    path.write_text(text)
    with pytest.raises(ModelError, match="must be a table") as info:
        load_registry([path])
    assert said in info.value.message and str(path) in info.value.message


def test_the_shipped_registries_pass() -> None:
    assert load_registry([TINY_REGISTRY]).replaced == ()
    assert default_registry().replaced == ()


def test_replacing_built_in_entries_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = "https://example.org/not-the-authors/autoencoder.pth"
    path = _entry(tmp_path, "autoencoders", "vq-f4", {"url": elsewhere}, BUILTIN)
    registry = load_registry([path])
    assert registry.replaced == ("autoencoders.vq-f4",)
    assert registry.get("realsr-v3").autoencoder.source.url == elsewhere
    notice = registry.replaced_notice()
    assert notice == "user registry replaces built-in [autoencoders.vq-f4]"
    monkeypatch.setenv("RESTORE_REGISTRY", str(path))
    assert default_registry().replaced == ("autoencoders.vq-f4",)
    same = _entry(tmp_path, "models", "realsr-v3", {}, BUILTIN)  # identical: nothing to say
    assert load_registry([same]).replaced == ()
    own = _entry(tmp_path, "models", "my-model", {**BUILTIN["models"]["realsr-v3"]}, BUILTIN)
    assert load_registry([own]).replaced == ()  # a new name replaces nothing
    moved = _entry(tmp_path, "models", "realsr-v3", {"description": "mine"}, BUILTIN)
    assert load_registry([moved]).replaced_notice() == (
        "user registry replaces built-in [models.realsr-v3]"
    )
