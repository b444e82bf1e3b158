"""``--manifest`` and JSON-lines ``--files-from``: concurrent shards, each appending its records,
partition the inputs and equal one unsharded run; a listing names outputs and masks; a manifest
feeds a rerun."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from .scale import (
    cli,
    comparable,
    one_thread,  # noqa: F401  (autouse)
    photos,
    rgb,
    same_files,
    spawn,
    tiny_args,
)


def read_manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_three_concurrent_shards_with_manifests_equal_an_unsharded_run(
    tmp_path, weights, capsys
) -> None:
    src = tmp_path / "in"
    photos(src, 7, broken=True)
    shared = ["sr", str(src), "-o", str(tmp_path / "sharded"), "--quiet", "--manifest",
              str(tmp_path / "logs" / "shard-{shard}.jsonl"), *tiny_args(weights)]  # fmt: skip
    procs = [spawn([*shared, "--shard", f"{k}/3"]) for k in (1, 2, 3)]  # all at once
    code, whole, _ = cli(["sr", str(src), "-o", str(tmp_path / "whole"), "--json",
                          "--manifest", str(tmp_path / "whole.jsonl"), *tiny_args(weights)],
                         capsys)  # fmt: skip
    results = [p.communicate(timeout=240) for p in procs]
    assert code == 1  # the broken file
    assert sorted(p.returncode for p in procs).count(0) >= 1, results
    logs = sorted((tmp_path / "logs").iterdir())
    assert [p.name for p in logs] == [f"shard-{k}-of-3.jsonl" for k in (1, 2, 3)]
    shards = [read_manifest(p) for p in logs]
    inputs = [r["input"] for rows in shards for r in rows]
    assert len(inputs) == len(set(inputs)) == 8  # a partition: every input once, in one shard
    assert read_manifest(tmp_path / "whole.jsonl") == whole  # the manifest is the --json lines
    assert sorted(comparable(r, tmp_path / "sharded") for rows in shards for r in rows) == sorted(
        comparable(r, tmp_path / "whole") for r in whole
    )
    for proc, rows in zip(procs, [read_manifest(p) for p in logs], strict=True):
        assert proc.returncode == (1 if any(r["status"] == "error" for r in rows) else 0)
    same_files(tmp_path / "whole", tmp_path / "sharded")


def test_a_json_lines_listing_names_outputs_and_masks_and_a_manifest_feeds_a_rerun(
    tmp_path, weights, capsys
) -> None:
    a, b = rgb(tmp_path / "a.png", 64, 64), rgb(tmp_path / "b.png", 64, 64, seed=1)
    hole = Image.new("L", (64, 64), 0)
    hole.paste(255, (16, 16, 40, 40))
    hole.save(tmp_path / "hole.png")
    listing = tmp_path / "list.jsonl"
    lines = [
        {"input": str(a), "output": str(tmp_path / "done" / "first.png"), "mask": str(tmp_path / "hole.png")},
        {"input": str(b), "output": str(tmp_path / "done" / "second.jpg"), "mask": str(tmp_path / "hole.png")},
    ]  # fmt: skip
    listing.write_text("# made by a script\n" + "".join(json.dumps(x) + "\n" for x in lines))
    argv = ["inpaint", "--files-from", str(listing), "--json", *tiny_args(weights, "tiny-inpaint")]
    code, records, err = cli([*argv, "--manifest", str(tmp_path / "m.jsonl")], capsys)
    assert code == 0, err
    assert [r["output"] for r in records] == [x["output"] for x in lines]
    assert Image.open(tmp_path / "done" / "second.jpg").format == "JPEG"
    assert Image.open(tmp_path / "done" / "first.png").size == (64, 64)
    code, again, _ = cli(["inpaint", "--files-from", str(tmp_path / "m.jsonl"), "--json",
                          *tiny_args(weights, "tiny-inpaint")], capsys)  # fmt: skip
    assert code == 0 and [r["status"] for r in again] == ["skipped", "skipped"]
    listing.write_text('{"output": "x.png"}\n')
    code, _, err = cli(argv, capsys)
    assert code == 2 and "line 1" in err
