"""`ray job submit --working-dir .` against a head node started with `ray start --head`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _ray(*args, env, timeout=300):
    exe = str(Path(sys.executable).parent / "ray")
    return subprocess.run([exe, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_stage1_job_submitted_to_a_head_node(repo_root, tokenizer, model_store, tmp_path):
    from colour_shards import write_colour_shards

    shards = write_colour_shards(tmp_path / "shards", tokenizer, n_train=16, n_val=4, n_text=8)
    env = dict(os.environ, RAY_AUTH_MODE="token", PYTHONDONTWRITEBYTECODE="1",
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env.pop("RAY_ADDRESS", None)
    port = 8265 + (os.getpid() % 500)
    # Ray's sockets live under --temp-dir, and an AF_UNIX path must stay under 108 bytes.
    temp_dir = tempfile.mkdtemp(prefix="fv-ray-", dir="/tmp")
    start = _ray("start", "--head", "--num-cpus=2", f"--dashboard-port={port}", "--dashboard-host=127.0.0.1",
                 "--include-dashboard=true", f"--temp-dir={temp_dir}", env=env)
    assert start.returncode == 0, start.stderr[-3000:]
    try:
        address = f"http://127.0.0.1:{port}"
        for _ in range(60):  # the dashboard's job server needs a few seconds
            if _ray("job", "list", f"--address={address}", env=env, timeout=60).returncode == 0:
                break
            time.sleep(1)
        runs = tmp_path / "runs"
        for _ in range(30):  # the job server answers before its agent is up: Ray says to try again later
            sub = _ray("job", "submit", f"--address={address}", "--working-dir", str(repo_root), "--",
                       "python", "jobs/stage1.py", "--config", "tiny", "training.stage=1", "name=submitted",
                       f"runs_dir={runs}", f"data.train_shards=['{shards['train']}']",
                       f"data.val_shards=['{shards['val']}']", f"data.text_shards=['{shards['text']}']",
                       "training.max_steps=4", "training.checkpoint_every=2", "eval.every_steps=2",
                       env=env, timeout=600)
            out = sub.stdout + sub.stderr
            if "No available agent to submit job" not in out:
                break
            time.sleep(2)
        assert sub.returncode == 0, out[-5000:]
        assert "succeeded" in out.lower()
        assert "== stage 1 done" in out
        assert (runs / "ray" / "submitted" / "metrics.jsonl").exists()
    finally:
        _ray("stop", "--force", env=env)
        shutil.rmtree(temp_dir, ignore_errors=True)
