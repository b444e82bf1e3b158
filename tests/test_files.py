"""Finding inputs, naming outputs, shards and masks: pure path logic on a temporary tree."""

from __future__ import annotations

import io
import os
import socket
from pathlib import Path

import pytest

from restore_cli.errors import InputError, OutputError, UsageError
from restore_cli.files import (
    FORMAT_BY_SUFFIX,
    IMAGE_SUFFIXES,
    READ_ONLY_SUFFIXES,
    WRITABLE_SUFFIXES,
    InputItem,
    Job,
    ensure_output_folder,
    find_inputs,
    find_mask,
    plan_outputs,
    printable,
    shard,
)


def touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def item(path: Path, rel: str | None = None) -> InputItem:
    return InputItem(path, Path(rel) if rel is not None else Path(path.name))


def outputs(jobs: list[Job]) -> list[Path]:
    return [job.output for job in jobs]


# --- find_inputs -------------------------------------------------------------------------------


def test_suffixes_are_the_writable_formats_plus_read_only_ones() -> None:
    assert WRITABLE_SUFFIXES == set(FORMAT_BY_SUFFIX)
    assert WRITABLE_SUFFIXES == {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"}
    assert IMAGE_SUFFIXES == WRITABLE_SUFFIXES | READ_ONLY_SUFFIXES and ".gif" in IMAGE_SUFFIXES


def test_read_only_formats_are_found_and_written_as_png(tmp_path: Path) -> None:
    touch(tmp_path / "in", "old.GIF", "scan.ppm", "a.png")
    items, ignored = find_inputs([tmp_path / "in"])
    assert [i.rel for i in items] == [Path("a.png"), Path("old.GIF"), Path("scan.ppm")]
    plan = plan_outputs(items, output=tmp_path / "out", default_suffix="", fmt="same", several=True)
    assert [p.name for p in outputs(plan)] == ["a.png", "old.png", "scan.png"]
    with pytest.raises(UsageError, match="cannot write images with extension '.gif'"):
        plan_outputs(items[1:2], output=tmp_path / "x.gif", default_suffix="", several=False)


def test_folder_is_searched_recursively_sorted_without_hidden(tmp_path: Path) -> None:
    touch(
        tmp_path / "in",
        "b.PNG",
        "a.jpg",
        "sub/c.webp",
        "sub/deeper/d.TIFF",
        "notes.txt",
        ".hidden.png",
        ".cache/e.png",
        "sub/.x/f.png",
    )
    items, ignored = find_inputs([tmp_path / "in"])
    assert [i.rel.as_posix() for i in items] == [
        "a.jpg",
        "b.PNG",
        "sub/c.webp",
        "sub/deeper/d.TIFF",
    ]
    assert all(i.path == tmp_path / "in" / i.rel for i in items)
    assert [(i.path, i.reason) for i in ignored] == [
        (tmp_path / "in" / "notes.txt", "not an image")
    ]


def test_output_folder_inside_an_input_folder_is_not_searched(tmp_path: Path, monkeypatch) -> None:
    touch(tmp_path / "in", "a.png", "out/a.png", "out/sub/b.png", "outer/c.png")
    items, _ = find_inputs([tmp_path / "in"], skip=tmp_path / "in" / "out")
    assert [i.rel.as_posix() for i in items] == ["a.png", "outer/c.png"]
    monkeypatch.chdir(tmp_path)
    items, _ = find_inputs([Path("in")], skip="in/out/")  # relative, as typed
    assert [i.rel.as_posix() for i in items] == ["a.png", "outer/c.png"]
    items, _ = find_inputs([Path("in")])
    assert len(items) == 4


def test_file_arguments_keep_their_name_as_rel_and_duplicates_go(tmp_path: Path) -> None:
    touch(tmp_path, "x/a.png", "y/a.png", "x/readme.md")
    args = [tmp_path / "x/a.png", tmp_path / "y/a.png", tmp_path / "x", tmp_path / "x/readme.md"]
    items, ignored = find_inputs(args)
    assert [(i.path, i.rel) for i in items] == [
        (tmp_path / "x/a.png", Path("a.png")),
        (tmp_path / "y/a.png", Path("a.png")),
    ]
    assert [i.path for i in ignored] == [tmp_path / "x/readme.md", tmp_path / "x/readme.md"]


def test_missing_path_is_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="nope.png: no such file or folder"):
        find_inputs([tmp_path / "nope.png"])


def test_files_from_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    touch(tmp_path, "a.png", "dir/b.jpg", "c.png")
    monkeypatch.chdir(tmp_path)
    listing = tmp_path / "list.txt"
    listing.write_text("# my picks\n\na.png\n  dir  \n")
    items, _ = find_inputs([Path("c.png")], files_from=listing)
    assert [(i.path, i.rel) for i in items] == [
        (Path("c.png"), Path("c.png")),
        (Path("a.png"), Path("a.png")),
        (Path("dir/b.jpg"), Path("b.jpg")),
    ]
    listing.write_text("a.png\nmissing.png\n")
    with pytest.raises(UsageError, match=r"missing\.png.*list\.txt line 2"):
        find_inputs([], files_from=listing)
    monkeypatch.setattr("sys.stdin", io.StringIO("a.png\n"))
    items, _ = find_inputs([], files_from=Path("-"))
    assert [i.path for i in items] == [Path("a.png")]


# --- plan_outputs ------------------------------------------------------------------------------


def test_one_file_no_output_goes_next_to_it(tmp_path: Path) -> None:
    one = [item(tmp_path / "photo.jpg")]
    plan = plan_outputs(one, output=None, default_suffix="_x4", several=False)
    assert outputs(plan) == [tmp_path / "photo_x4.png"] and plan[0].input == one[0]
    plan = plan_outputs(one, output=None, default_suffix="_x4", fmt="same", several=False)
    assert outputs(plan) == [tmp_path / "photo_x4.jpg"]
    plan = plan_outputs(one, output=None, default_suffix="_x4", suffix="_big", several=False)
    assert outputs(plan) == [tmp_path / "photo_big.png"]
    plan = plan_outputs(one, output=None, default_suffix="_x4", fmt="webp", several=False)
    assert outputs(plan) == [tmp_path / "photo_x4.webp"]


def test_same_format_lowercases_and_falls_back_to_png(tmp_path: Path) -> None:
    items = [item(tmp_path / "A.TIF"), item(tmp_path / "b.gif")]
    plan = plan_outputs(
        items, output=tmp_path / "out", default_suffix="_x4", fmt="same", several=True
    )
    assert outputs(plan) == [tmp_path / "out/A.tif", tmp_path / "out/b.png"]


def test_one_file_with_output_file(tmp_path: Path) -> None:
    one = [item(tmp_path / "photo.jpg")]
    plan = plan_outputs(one, output=tmp_path / "r.WEBP", default_suffix="_x4", several=False)
    assert outputs(plan) == [tmp_path / "r.WEBP"]
    with pytest.raises(UsageError) as err:
        plan_outputs(one, output=tmp_path / "r.gif", default_suffix="_x4", several=False)
    assert ".gif" in err.value.message and ".png" in (err.value.hint or "")


def test_one_file_with_output_folder(tmp_path: Path) -> None:
    one = [item(tmp_path / "photo.jpg")]
    (tmp_path / "existing").mkdir()
    plan = plan_outputs(one, output=tmp_path / "existing", default_suffix="_x4", several=False)
    assert outputs(plan) == [tmp_path / "existing/photo.png"]
    plan = plan_outputs(one, output=f"{tmp_path}/new/", default_suffix="_x4", several=False)
    assert outputs(plan) == [tmp_path / "new/photo.png"]
    plan = plan_outputs(
        one, output=f"{tmp_path}/new/", default_suffix="_x4", suffix="_s", several=False
    )
    assert outputs(plan) == [tmp_path / "new/photo_s.png"]


def test_folder_inputs_mirror_rel_under_output(tmp_path: Path) -> None:
    items = [item(tmp_path / "in/a.jpg", "a.jpg"), item(tmp_path / "in/s/b.png", "s/b.png")]
    plan = plan_outputs(items, output=tmp_path / "out", default_suffix="_x4", several=True)
    assert outputs(plan) == [tmp_path / "out/a.png", tmp_path / "out/s/b.png"]
    plan = plan_outputs(
        items, output=tmp_path / "out", default_suffix="_x4", fmt="jpg", suffix="_r", several=True
    )
    assert outputs(plan) == [tmp_path / "out/a_r.jpg", tmp_path / "out/s/b_r.jpg"]
    one_from_folder = items[:1]  # a folder with one image is still the folder case
    plan = plan_outputs(
        one_from_folder, output=tmp_path / "out", default_suffix="_x4", several=True
    )
    assert outputs(plan) == [tmp_path / "out/a.png"]


def test_several_inputs_need_an_output_folder(tmp_path: Path) -> None:
    items = [item(tmp_path / "a.png"), item(tmp_path / "b.png")]
    with pytest.raises(UsageError) as err:
        plan_outputs(items, output=None, default_suffix="_x4", several=True)
    assert "-o DIR" in (err.value.hint or "")
    with pytest.raises(UsageError, match="looks like a file"):
        plan_outputs(items, output=tmp_path / "out.png", default_suffix="_x4", several=True)
    touch(tmp_path, "afile")
    with pytest.raises(UsageError, match="is a file"):
        plan_outputs(items, output=tmp_path / "afile", default_suffix="_x4", several=True)
    assert plan_outputs([], output=None, default_suffix="_x4", several=True) == []


def test_clashes_are_reported_before_work(tmp_path: Path) -> None:
    items = [item(tmp_path / "in/a.png", "a.png"), item(tmp_path / "in/a.jpg", "a.jpg")]
    with pytest.raises(UsageError) as err:
        plan_outputs(items, output=tmp_path / "out", default_suffix="_x4", several=True)
    assert str(tmp_path / "out/a.png") in err.value.message
    assert "in/a.png" in err.value.message and "in/a.jpg" in err.value.message
    # Fine with format "same": a.png and a.jpg stay apart.
    plan_outputs(items, output=tmp_path / "out", default_suffix="_x4", fmt="same", several=True)

    two_folders = [item(tmp_path / "x/s/a.png", "s/a.png"), item(tmp_path / "y/s/a.png", "s/a.png")]
    with pytest.raises(UsageError, match="same output"):
        plan_outputs(two_folders, output=tmp_path / "out", default_suffix="", several=True)

    case = [
        item(tmp_path / "in/Photo.png", "Photo.png"),
        item(tmp_path / "in/photo.png", "photo.png"),
    ]
    with pytest.raises(UsageError, match="same output"):
        plan_outputs(case, output=tmp_path / "out", default_suffix="", several=True)


def test_output_may_not_overwrite_an_input(tmp_path: Path) -> None:
    touch(tmp_path, "in/a.png", "in/b.jpg")
    one = [item(tmp_path / "in/a.png")]
    with pytest.raises(UsageError, match="overwrite the input"):
        plan_outputs(one, output=None, default_suffix="", several=False)
    with pytest.raises(UsageError, match="overwrite the input"):
        plan_outputs(one, output=tmp_path / "in/../in/a.png", default_suffix="_x4", several=False)
    items = [item(tmp_path / "in/a.png", "a.png"), item(tmp_path / "in/b.jpg", "b.jpg")]
    with pytest.raises(UsageError, match="overwrite the input"):
        plan_outputs(items, output=tmp_path / "in", default_suffix="", fmt="same", several=True)
    plan = plan_outputs(items, output=tmp_path / "in", default_suffix="", suffix="_r", several=True)
    assert outputs(plan) == [tmp_path / "in/a_r.png", tmp_path / "in/b_r.png"]


def test_unknown_format_is_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="gif"):
        plan_outputs(
            [item(tmp_path / "a.png")], output=None, default_suffix="_x", fmt="gif", several=False
        )


# --- shard -------------------------------------------------------------------------------------


def test_shards_partition_and_are_stable() -> None:
    items = [item(Path(f"/in/{i:03d}.png"), f"d{i % 7}/{i:03d}.png") for i in range(200)]
    shards = [shard(items, f"{k}/4") for k in range(1, 5)]
    assert sum(len(s) for s in shards) == len(items)
    assert {i.rel for s in shards for i in s} == {i.rel for i in items}  # union is everything
    for s in shards:
        assert len(s) > 20  # roughly balanced
        assert s == [i for i in items if i in s]  # order kept
    more = items + [item(Path(f"/in/new{i}.png"), f"new/{i}.png") for i in range(50)]
    for k, old in enumerate(shards, start=1):
        new = shard(more, f"{k}/4")
        assert [i for i in new if i in items] == old  # adding files moves nobody
    # The same rel lands in the same shard whatever the folder it lives in.
    moved = [InputItem(Path("/elsewhere") / i.rel, i.rel) for i in items]
    assert [i.rel for i in shard(moved, "3/4")] == [i.rel for i in shards[2]]
    assert shard(items, "1/1") == items


def test_shard_known_values() -> None:
    # Pinned: shards must not change between versions, or resumed jobs would redo or skip files.
    items = [item(Path("/x") / rel, rel) for rel in ["a.png", "b.png", "s/c.jpg", "d.tif"]]
    assert [[i.rel.as_posix() for i in shard(items, f"{k}/4")] for k in range(1, 5)] == [
        ["d.tif"],
        ["b.png"],
        ["a.png"],
        ["s/c.jpg"],
    ]


@pytest.mark.parametrize("spec", ["0/4", "5/4", "1", "a/b", "1/0", "-1/2", "1/2/3", ""])
def test_bad_shard_spec(spec: str) -> None:
    with pytest.raises(UsageError, match="K/N"):
        shard([], spec)


# --- find_mask ---------------------------------------------------------------------------------


def test_mask_file_is_used_for_every_image(tmp_path: Path) -> None:
    touch(tmp_path, "m.png")
    assert find_mask(tmp_path / "m.png", item(tmp_path / "a.jpg")) == tmp_path / "m.png"


def test_mask_folder_lookup_order(tmp_path: Path) -> None:
    m = tmp_path / "masks"
    touch(m, "s/a.jpg", "s/a.png", "s/b.PNG", "s/c_mask.png", "elsewhere/d.bmp", "e.png", "z/e.png")
    assert find_mask(m, item(tmp_path / "in/s/a.jpg", "s/a.jpg")) == m / "s/a.jpg"  # same rel
    assert find_mask(m, item(tmp_path / "in/s/b.jpg", "s/b.jpg")) == m / "s/b.PNG"  # same stem
    assert find_mask(m, item(tmp_path / "in/s/c.jpg", "s/c.jpg")) == m / "s/c_mask.png"
    assert find_mask(m, item(tmp_path / "in/d.png", "d.png")) == m / "elsewhere/d.bmp"  # unique
    with pytest.raises(InputError, match="several possible masks"):
        find_mask(m, item(tmp_path / "in/s/a.webp", "s/a.webp"))  # a.jpg and a.png both fit
    with pytest.raises(InputError, match="several possible masks"):
        find_mask(m, item(tmp_path / "in/q/e.webp", "q/e.webp"))  # e.png and z/e.png
    with pytest.raises(InputError) as err:
        find_mask(m, item(tmp_path / "in/s/zz.jpg", "s/zz.jpg"))
    assert "zz.jpg" in err.value.message and str(m) in err.value.message


def test_masks_beside_the_photos_never_pick_the_photo(tmp_path: Path) -> None:
    touch(tmp_path, "p/a.jpg", "p/a_mask.png", "p/b.jpg")
    folder = tmp_path / "p"
    assert find_mask(folder, item(folder / "a.jpg")) == folder / "a_mask.png"
    with pytest.raises(InputError, match="no mask"):
        find_mask(folder, item(folder / "b.jpg"))


def test_missing_mask_path_is_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such mask"):
        find_mask(tmp_path / "nope", item(tmp_path / "a.png"))


# --- hostile names and files -------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["/x", "../up", "a/../b", "..", "sub\\x", "a\0b"])
def test_suffix_that_is_a_path_is_a_usage_error(tmp_path: Path, suffix: str) -> None:
    one = [item(tmp_path / "a.png")]
    for output, several in ((None, False), (tmp_path / "out", True)):
        with pytest.raises(UsageError, match="path separator or '..'") as err:
            plan_outputs(one, output=output, default_suffix="_x4", suffix=suffix, several=several)
        assert err.value.option == "suffix"
    plan = plan_outputs(
        one, output=tmp_path / "out", default_suffix="", suffix="_v1.2", several=True
    )
    assert outputs(plan) == [tmp_path / "out" / "a_v1.2.png"]


def test_links_out_of_the_output_folder_are_refused_for_that_file(tmp_path: Path) -> None:
    touch(tmp_path / "in", "a.png", "away/b.png", "away/deep/c.png", "alias/d.png")
    elsewhere, out = tmp_path / "elsewhere", tmp_path / "out"
    elsewhere.mkdir()
    (out / "inner").mkdir(parents=True)
    (out / "away").symlink_to(elsewhere, target_is_directory=True)
    (out / "alias").symlink_to(out / "inner", target_is_directory=True)  # stays inside: fine
    items, _ = find_inputs([tmp_path / "in"])
    jobs = {
        job.input.rel.as_posix(): job
        for job in plan_outputs(items, output=out, default_suffix="", several=True)
    }
    assert all(job.root == out for job in jobs.values())
    ensure_output_folder(jobs["a.png"])
    ensure_output_folder(jobs["alias/d.png"])
    for rel in ("away/b.png", "away/deep/c.png"):
        with pytest.raises(OutputError, match="leads out of it") as err:
            ensure_output_folder(jobs[rel])
        assert "\n" not in str(err.value)
    assert list(elsewhere.iterdir()) == []  # not even the folder "deep" was made there
    one = plan_outputs(
        [item(tmp_path / "in/a.png")], output=tmp_path / "x.png", default_suffix="", several=False
    )
    assert one[0].root is None  # an output named exactly is the user's to place


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_special_files_are_ignored_with_a_reason(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    touch(folder, "a.png", "notes.txt")
    os.mkfifo(folder / "pipe.png")
    (folder / "zero.jpg").symlink_to(os.devnull)
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(folder / "sock.png"))
    except OSError:  # a path too long for a socket name
        pass
    with server:
        items, ignored = find_inputs([folder, folder / "pipe.png", Path(os.devnull)])
    assert [i.rel for i in items] == [Path("a.png")]
    reasons = {i.path.name: i.reason for i in ignored}
    assert reasons.pop("sock.png", "a socket") == "a socket"
    assert reasons == {
        "notes.txt": "not an image",
        "pipe.png": "a named pipe (FIFO)",
        "zero.jpg": "a device file",
        "null": "a device file",
    }
    assert str(ignored[0]) == printable(ignored[0].path)


def test_printable_escapes_what_a_terminal_would_act_on() -> None:
    assert printable("a\x1b[31mb\n\r\t\x7f\x9b.png") == "a\\x1b[31mb\\x0a\\x0d\\x09\\x7f\\x9b.png"
    assert printable("x\u202egnp.exe") == "x\\u202egnp.exe"  # shown as "xexe.png" if left raw
    assert printable(Path("a") / "b\u2028c") == "a/b\\u2028c"
    assert printable(os.fsdecode(b"\xff\xfe.png")) == "\\xff\\xfe.png"  # undecodable bytes
    for kept in ("caf\u00e9 \u5199\u771f.png", "family \U0001f468\u200d\U0001f469.png", "a b.png"):
        assert printable(kept) == kept


def test_messages_carry_printable_names(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as err:
        find_inputs([tmp_path / "no\x1b]2;x\x07.png"])
    assert "\x1b" not in str(err.value) and "no\\x1b]2;x\\x07.png" in str(err.value)
    (tmp_path / "m\rx").mkdir()
    with pytest.raises(InputError) as err:
        find_mask(tmp_path / "m\rx", item(tmp_path / "a\n.png"))
    assert "\n" not in str(err.value) and "\r" not in str(err.value)
