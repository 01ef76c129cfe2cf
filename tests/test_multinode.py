"""A Ray cluster of two nodes on this machine: a 2-worker run places one worker on each node,
keeps its checkpoints and metrics in S3 (the moto server), loses a worker mid-run, restarts
from the checkpoint in S3 and ends with the losses of an uninterrupted run."""

from __future__ import annotations

import json

import pytest

from fovea.platform.config import load_config

pytestmark = pytest.mark.slow


@pytest.fixture
def two_nodes(s3_bucket):
    """Two raylets of one CPU each (a head and a worker node): a worker needing a whole CPU
    cannot share a node with the other. Started after ``s3_bucket`` has set the AWS_* variables,
    as a user exports them before ``ray start`` on every node."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    from ports import free_port

    # a dashboard port of its own (the State API below needs the dashboard): the default 8265
    # may be held by another Ray instance on the machine, and the head then starts without one
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "dashboard_port": free_port()})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def logged_steps(run_dir: str) -> list[dict]:
    """The training rows of the run's metrics.jsonl, in the order they were logged."""
    from fovea.pipelines import storage

    rows = [json.loads(line) for line in storage.read_text(storage.join(run_dir, "metrics.jsonl")).splitlines()]
    return [r for r in rows if "loss" in r]


def worker_nodes() -> set[str]:
    from ray.util.state import list_actors

    return {a.node_id for a in list_actors(filters=[("class_name", "=", "RayTrainWorker")], detail=True,
                                           limit=1000)}


def test_two_node_run_resumes_from_s3_after_a_worker_dies(two_nodes, s3_bucket, tokenizer, model_store,
                                                          tmp_path, monkeypatch):
    from colour_shards import write_colour_shards

    from fovea.platform.train.trainer import fit

    from s3_server import list_keys

    shards = write_colour_shards(tmp_path / "shards", tokenizer, n_train=32, n_val=0, n_text=8)

    def cfg(name: str, *extra: str):
        return load_config("tiny", [
            f"name={name}", f"runs_dir={s3_bucket}/runs", f"tracking.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
            f"data.train_shards=['{shards['train']}']", "data.val_shards=[]",
            f"data.text_shards=['{shards['text']}']", "data.shuffle_buffer=0",
            "training.max_steps=8", "training.checkpoint_every=4", "eval.every_steps=0",
            "cluster.num_workers=2", "cluster.cpus_per_worker=1", *extra])

    straight = fit(cfg("straight", "cluster.max_failures=0"))
    assert len(worker_nodes()) == 2, "the two workers did not land on two nodes"

    monkeypatch.setenv("FOVEA_FAULT_INJECT", f"step=6,rank=1,marker={tmp_path / 'fired'}")
    faulty = fit(cfg("faulty", "cluster.max_failures=1"))
    assert (tmp_path / "fired").exists(), "the worker was never killed"

    rows = logged_steps(faulty.run_dir)
    # killed at step 6, restarted from the step-4 checkpoint: the log in S3 is the one saved with
    # that checkpoint (steps 1-4) and the restarted attempt's steps 5-8 (a restart from scratch
    # would log steps 1-4 a second time)
    assert [r["step"] for r in rows] == list(range(1, 9))
    want = {r["step"]: r["loss"] for r in logged_steps(straight.run_dir)}
    got = {r["step"]: r["loss"] for r in rows}  # the last attempt at each step
    assert sorted(got) == sorted(want) == list(range(1, 9))
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=1e-6, abs=1e-7), step
    bucket = s3_bucket.removeprefix("s3://")
    keys = list_keys(bucket, "runs/ray/faulty/")
    assert any("/checkpoint_" in k for k in keys), keys
    assert str(faulty.latest_checkpoint).startswith(f"{s3_bucket}/runs/ray/faulty/")
