"""restore_cli.distributed: the worker's contract without Ray, then a real local Ray cluster
(two CPUs, loopback, no dashboard) running restore_rows and ``--engine ray`` on tiny models."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from restore_cli import distributed
from restore_cli.errors import UsageError

from .scale import (
    cli,
    comparable,
    one_thread,  # noqa: F401  (autouse)
    photos,
    same_files,
    tiny_args,
)


@pytest.fixture()
def sr_worker(registry, weights) -> distributed.RestoreWorker:
    unet, ae = weights("tiny-sr")
    spec = registry.get("tiny-sr")
    return distributed.RestoreWorker("sr", spec, str(unet), str(ae), device="cpu", seed=7)


@pytest.fixture()
def cli_reference(tmp_path, weights, capsys):
    """Three inputs (two good, one truncated) restored by ``restore sr`` with seed 7."""
    src = tmp_path / "in"
    photos(src, 2, broken=True)
    out = tmp_path / "cli"
    code, records, _ = cli(["sr", str(src), "-o", str(out), "--json", "--seed", "7",
                            *tiny_args(weights)], capsys)  # fmt: skip
    assert code == 1
    return src, out, records


def as_ray_batch(rows: list[dict]) -> dict[str, np.ndarray]:
    """Rows as Ray Data hands a batch to a callable class: a dict of numpy object columns."""
    return {key: np.array([row[key] for row in rows], dtype=object) for key in rows[0]}


def test_worker_pickles_restores_like_the_cli_and_skips_on_a_second_call(
    tmp_path, registry, sr_worker, cli_reference
) -> None:
    src, cli_out, cli_records = cli_reference
    out = tmp_path / "worker"
    rows = distributed.plan_rows("sr", [src], model=registry.get("tiny-sr"), output=out)
    assert [Path(r["input"]).name for r in rows] == ["broken.png", "p0.png", "p1.png"]
    worker = pickle.loads(pickle.dumps(sr_worker))
    result = worker(as_ray_batch(rows))
    assert list(result) == list(distributed.COLUMNS)
    records = [
        dict(zip(result, values, strict=True)) for values in zip(*result.values(), strict=True)
    ]
    assert [r["status"] for r in records] == ["error", "ok", "ok"]
    assert "broken.png" in records[0]["error"]
    assert sorted(comparable(r, out) for r in records) == sorted(
        comparable(r, cli_out) for r in cli_records
    )
    same_files(cli_out, out)  # byte-identical outputs, same names
    pickle.dumps(worker)  # still picklable with its model loaded (the model is not carried)
    again = worker({k: list(v) for k, v in as_ray_batch(rows).items()})  # plain lists work too
    assert again["status"] == ["error", "skipped", "skipped"]


def test_worker_checks_its_settings_before_any_work(registry) -> None:
    spec = registry.get("tiny-sr")
    with pytest.raises(UsageError, match="not `restore inpaint`"):
        distributed.RestoreWorker("inpaint", spec)
    with pytest.raises(UsageError, match="unknown restoration setting"):
        distributed.RestoreWorker("sr", spec, sede=1)
    with pytest.raises(UsageError, match="tile"):
        distributed.RestoreWorker("sr", spec, tile=-1)
    worker = distributed.RestoreWorker("sr", spec, tile=64, scale=2.0, batch_size=3)
    assert distributed.RestoreWorker(**worker.kwargs).kwargs == worker.kwargs
    assert distributed.RestoreWorker(**worker.kwargs).request.batch_size == 3
    # the network batch travels under its own name, beside restore_rows' rows-per-call batch_size
    assert "batch_size" not in worker.kwargs and worker.kwargs["network_batch_size"] == 3
    with pytest.raises(UsageError, match="one of them"):
        distributed.RestoreWorker("sr", spec, batch_size=2, network_batch_size=2)


def test_rows_refuse_the_clashes_the_cli_refuses(tmp_path, registry) -> None:
    photos(tmp_path / "a", 1)
    photos(tmp_path / "b", 1)  # a/p0.png and b/p0.png -> out/p0.png twice
    with pytest.raises(UsageError, match="same output"):
        distributed.plan_rows(
            "sr", [tmp_path / "a", tmp_path / "b"], model=registry.get("tiny-sr"), output="o/"
        )


# --- a real local Ray cluster ---------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason='needs pip install ".[ray]"')
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        mp.setenv("OMP_NUM_THREADS", "1")
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=False, logging_level="warning")  # fmt: skip
        try:
            yield ray
        finally:
            ray.shutdown()


def test_restore_rows_on_ray_gives_the_cli_files_and_records(
    tmp_path, registry, sr_worker, cli_reference, ray_cluster
) -> None:
    src, cli_out, cli_records = cli_reference
    out = tmp_path / "ray"
    rows = distributed.plan_rows("sr", [src], model=registry.get("tiny-sr"), output=out)
    kwargs = sr_worker.kwargs | {"network_batch_size": 2}  # two images through the UNet at once
    records = distributed.restore_rows(rows, actors=1, batch_size=2, **kwargs)
    assert [Path(r["input"]).name for r in records] == ["broken.png", "p0.png", "p1.png"]
    assert sorted(comparable(r, out) for r in records) == sorted(
        comparable(r, cli_out) for r in cli_records
    )
    same_files(cli_out, out)  # (a rerun skips: see the command line's test below)
    assert ray_cluster.is_initialized()  # a cluster that was already connected stays so


def test_engine_ray_on_the_command_line(tmp_path, weights, cli_reference, capsys, ray_cluster):
    src, cli_out, cli_records = cli_reference
    out = tmp_path / "engine"
    argv = ["sr", str(src), "-o", str(out), "--json", "--seed", "7", "--engine", "ray",
            "--actors", "1", *tiny_args(weights)]  # fmt: skip
    code, records, err = cli(argv, capsys)
    assert code == 1 and "broken.png" in err  # exit codes and error lines as usual
    assert sorted(comparable(r, out) for r in records) == sorted(
        comparable(r, cli_out) for r in cli_records
    )
    same_files(cli_out, out)
    code, records, _ = cli([*argv, "--manifest", str(tmp_path / "m-{shard}.jsonl")], capsys)
    assert code == 1 and sorted(r["status"] for r in records) == ["error", "skipped", "skipped"]
    assert len((tmp_path / "m-1-of-1.jsonl").read_text().splitlines()) == 3
    code, _, err = cli([*argv, "--overwrite", "--checkpoint", str(tmp_path / "nope.st")], capsys)
    assert code == 3 and "nope.st" in err  # a weights problem in an actor: exit 3, one line
    assert "Traceback" not in err
