"""Relative paths resolve once, against the directory the user ran the command from (or
FOVEA_ROOT), never inside Ray's copy of a submitted job's --working-dir: the README's submit
command finds its data and keeps its results. (Sweeps from a project directory with relative
paths: tests/test_sweep.py, the killed-and-resumed sweep.)"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from fovea.platform.config import ConfigError, absolute_paths, load_config
from fovea.platform.paths import RAY_JOB_CONFIG_ENV, ROOT_ENV, resolve


def test_relative_paths_resolve_against_the_root(tmp_path, monkeypatch):
    monkeypatch.delenv(ROOT_ENV, raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(RAY_JOB_CONFIG_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = absolute_paths(load_config("demo", ["training.init_from=runs/ray/demo_stage1"]))
    assert cfg.data.train_shards == [f"{tmp_path}/data/demo/shards/webvid/train-*.tar"]
    assert (cfg.runs_dir, cfg.training.init_from) == (f"{tmp_path}/runs", f"{tmp_path}/runs/ray/demo_stage1")
    assert cfg.tracking_uri() == f"sqlite:///{tmp_path}/runs/mlflow.db"

    monkeypatch.setenv(ROOT_ENV, "s3://bucket/project/")
    sets = ["training.init_from=0123abcd", "cluster.storage_path=/mnt/ray"]
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_URI"):
        absolute_paths(load_config("demo", sets))  # SQLite cannot live in a bucket
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://head:5000")
    cfg = absolute_paths(load_config("demo", sets))
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert cfg.tracking_uri() == "http://head:5000"  # pinned for workers on other nodes
    assert cfg.data.val_shards == ["s3://bucket/project/data/demo/shards/webvid/val-*.tar"]
    assert (cfg.runs_dir, cfg.storage_path()) == ("s3://bucket/project/runs", "/mnt/ray")
    assert cfg.training.init_from == "0123abcd"  # no slash: an MLflow run id
    assert resolve("/abs/x") == "/abs/x" and resolve("s3://b/x") == "s3://b/x"


def test_a_submitted_job_without_a_root_names_what_to_set(tmp_path, monkeypatch):
    monkeypatch.delenv(ROOT_ENV, raising=False)
    monkeypatch.setenv(RAY_JOB_CONFIG_ENV, json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_x.zip"}}))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as e:
        absolute_paths(load_config("demo"))
    assert "data.train_shards='data/demo/shards/webvid/train-*.tar' is relative" in str(e.value)
    assert f"export {ROOT_ENV}=$PWD" in str(e.value)
    abs_sets = [f"runs_dir={tmp_path}/runs"] + [f"data.{k}_shards=['{tmp_path}/{k}-*.tar']"
                                                 for k in ("train", "val", "text")]
    assert absolute_paths(load_config("demo", abs_sets)).runs_dir == f"{tmp_path}/runs"  # nothing relative
    monkeypatch.setenv(ROOT_ENV, str(tmp_path))
    assert absolute_paths(load_config("demo")).runs_dir == f"{tmp_path}/runs"


def demo_project(root: Path, tokenizer) -> Path:
    """``root/data/demo/shards/...`` laid out as `make demo` leaves it (tiny colour videos)."""
    from colour_shards import write_colour_shards

    write_colour_shards(root / "tmp", tokenizer, n_train=16, n_val=4, n_text=8)
    shards = root / "data" / "demo" / "shards"
    (shards / "smoltalk_s1").parent.mkdir(parents=True)
    shutil.move(str(root / "tmp" / "colours"), shards / "webvid")
    shutil.move(str(root / "tmp" / "text"), shards / "smoltalk_s1")
    shutil.rmtree(root / "tmp")
    return root


def mlflow_runs(db: Path) -> list[tuple[str, str]]:
    """(run name, status) of every run in an MLflow SQLite store."""
    with sqlite3.connect(db) as con:
        return con.execute("SELECT name, status FROM runs").fetchall()


def clean_env(**extra) -> dict[str, str]:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               **extra)
    for k in ("RAY_ADDRESS", ROOT_ENV, "MLFLOW_TRACKING_URI"):
        env.pop(k, None)
    return env


@pytest.mark.slow
def test_readme_submit_keeps_checkpoints_and_mlflow_run_after_the_cluster_stops(repo_root, tokenizer,
                                                                                 model_store, tmp_path):
    """`export FOVEA_ROOT=...; ray start --head; ray job submit --working-dir . -- python
    jobs/stage1.py --config demo` as the README writes it (steps and evaluation cut short). (Without FOVEA_ROOT a
    submitted job stops at once and says what to set: the test above, on the config code.)"""
    project = demo_project(tmp_path / "project", tokenizer)
    temp_dir = tempfile.mkdtemp(prefix="fv-ray-", dir="/tmp")  # AF_UNIX paths stay under 108 bytes
    env = clean_env(RAY_AUTH_MODE="token")
    ray = str(Path(sys.executable).parent / "ray")

    def ray_cli(*args, timeout=300, **kw):
        return subprocess.run([ray, *args], env=env, capture_output=True, text=True, timeout=timeout, **kw)

    # Ports of their own: another Ray instance on this machine (a test's local cluster) holds
    # the defaults, and a head whose job agent cannot bind answers "No available agent".
    gcs, dash, agent, agent_grpc, env_agent, metrics, client = free_ports(7)
    env[ROOT_ENV] = str(project)  # the README: exported before `ray start --head`
    start = ray_cli("start", "--head", "--num-cpus=2", f"--port={gcs}", f"--dashboard-port={dash}",
                    "--dashboard-host=127.0.0.1", "--include-dashboard=true", f"--temp-dir={temp_dir}",
                    f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
                    f"--runtime-env-agent-port={env_agent}", f"--metrics-export-port={metrics}",
                    f"--ray-client-server-port={client}")
    assert start.returncode == 0, start.stderr[-3000:]
    env.pop(ROOT_ENV)
    env["RAY_ADDRESS"] = f"http://127.0.0.1:{dash}"
    try:
        wait_for_job_server(ray_cli)
        job = submit(ray_cli, repo_root)
        out = job.stdout + job.stderr
        assert job.returncode == 0 and "== stage 1 done" in out, out[-5000:]
    finally:
        stop_cluster(temp_dir)  # this head only (`ray stop` would stop every Ray on the machine)
        shutil.rmtree(temp_dir, ignore_errors=True)
    run_dir = project / "runs" / "ray" / "demo_stage1"
    assert sorted(p.name for p in run_dir.glob("checkpoint_*")), list(run_dir.iterdir())
    assert ("demo_stage1", "FINISHED") in mlflow_runs(project / "runs" / "mlflow.db")


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def stop_cluster(temp_dir: str) -> None:
    """SIGKILL the head's processes (their command lines name its --temp-dir); its workers go
    with its raylet."""
    import psutil

    procs = [p for p in psutil.process_iter(["cmdline"]) if temp_dir in " ".join(p.info["cmdline"] or [])]
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(procs, timeout=30)


def wait_for_job_server(ray_cli) -> None:
    for _ in range(60):  # the dashboard's job server needs a few seconds
        if ray_cli("job", "list", timeout=60).returncode == 0:
            return
        time.sleep(1)


def submit(ray_cli, repo_root: Path, *extra: str) -> subprocess.CompletedProcess:
    for _ in range(30):  # the job server answers before its agent is up: Ray says to try again later
        job = ray_cli("job", "submit", "--working-dir", ".", *extra, "--", "python", "jobs/stage1.py",
                      "--config", "demo", "training.max_steps=2", "eval.max_samples=2", "eval.caption_samples=0",
                      cwd=repo_root, timeout=600)
        if "No available agent to submit job" not in job.stdout + job.stderr:
            return job
        time.sleep(2)
    return job
