"""A run's inputs are checked in the driver before Ray or an MLflow run start: missing shards,
a bad ``init_from`` and a benchmarks folder without benchmarks end in one error that says what
to run next, and leave no cluster and no run behind; a run stopped with Ctrl-C is marked KILLED,
never left RUNNING.  The README shows a preprocess command for every shard set a stage reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fovea.platform.config import load_config

REPO = Path(__file__).resolve().parents[1]


def tiny(tmp_path: Path, *extra: str):
    return load_config("tiny", [f"runs_dir={tmp_path / 'runs'}", *extra])


def shard_set(folder: Path) -> str:
    """A shard folder with one (empty) tar: the check is on names, the loader reads the bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train-00000.tar").write_bytes(b"")
    return str(folder / "train-*.tar")


def test_missing_shards_stop_fit_before_ray_and_mlflow(tmp_path, monkeypatch):
    import ray

    from fovea.platform.train.preflight import RunInputError
    from fovea.platform.train.trainer import fit

    monkeypatch.chdir(tmp_path)
    ray_before = ray.is_initialized()  # an earlier test of the session may have started one
    cfg = tiny(tmp_path, "data.train_shards=['data/shards/webvid/train-*.tar']",
               "data.text_shards=['data/shards/smoltalk_s2/train-*.tar']", "training.stage=2")
    with pytest.raises(RunInputError) as e:
        fit(cfg)
    msg = str(e.value)
    assert "data.train_shards=['data/shards/webvid/train-*.tar'] matches no .tar file" in msg
    assert "python jobs/preprocess.py webvid --input /path/to/raw/webvid --output data/shards/webvid --stage 2" in msg
    # SmolTalk's folder carries its stage; the job appends it to --output itself
    assert "python jobs/preprocess.py smoltalk --input data/demo/raw/smoltalk --output data/shards/smoltalk --stage 2" in msg
    assert "make demo" in msg
    assert ray.is_initialized() == ray_before and not (tmp_path / "runs").exists()


def test_a_bad_init_from_starts_nothing_and_leaves_no_running_run(tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from fovea.platform.stages import main
    from fovea.platform.train.preflight import RunInputError
    from fovea.platform.train.trainer import fit

    train = shard_set(tmp_path / "shards")
    common = [f"data.train_shards=['{train}']", "data.text_ratio=0", "training.stage=2"]
    with pytest.raises(RunInputError, match=r"training.init_from='.*nope' names no checkpoint: no such path"):
        fit(tiny(tmp_path, *common, f"training.init_from={tmp_path / 'nope'}"))
    assert not (tmp_path / "runs").exists()
    run_id = "0123456789abcdef0123456789abcdef"  # looks like an MLflow run id; no such run
    rc = main(2, ["--config", "tiny", f"runs_dir={tmp_path / 'runs'}", *common, f"training.init_from={run_id}",
                  "--dry-run"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert err.startswith(f"error: training.init_from='{run_id}' names no checkpoint: ")
    assert "train stage 1 first (python jobs/stage1.py)" in err
    assert f"no MLflow store at {tmp_path / 'runs' / 'mlflow.db'}" in err and not (tmp_path / "runs").exists()
    # with a store (an earlier run made it), MLflow's own "not found", and still no run opened
    store = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    store.create_experiment("fovea")
    with pytest.raises(RunInputError, match=f"training.init_from='{run_id}' names no checkpoint: .*{run_id}"):
        fit(tiny(tmp_path, *common, f"training.init_from={run_id}"))
    exps = [x.experiment_id for x in store.search_experiments()]
    assert store.search_runs(exps) == []


def test_a_checkpoint_layer_count_past_dinov2s_blocks_stops_the_job_before_ray(tmp_path, model_store):
    import subprocess
    import sys

    from fovea.platform.train.preflight import RunInputError, check_model_settings

    cfg = tiny(tmp_path, "model.gradient_checkpointing=dino", "model.dino_checkpoint_layers=2")
    check_model_settings(cfg)  # the tiny DINOv2 has 2 blocks
    cfg = tiny(tmp_path, "model.gradient_checkpointing=dino", "model.dino_checkpoint_layers=3")
    with pytest.raises(RunInputError, match=r"model.dino_checkpoint_layers=3 \(config tiny\), but "
                                            r"model.dino='fovea/tiny-dinov2' has 2 patch blocks: set 0..2"):
        check_model_settings(cfg, "tiny")
    p = subprocess.run([sys.executable, str(REPO / "jobs" / "stage1.py"), "--config", "tiny", "--dry-run",
                        "model.gradient_checkpointing=dino", "model.dino_checkpoint_layers=12"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "error: model.dino_checkpoint_layers=12 (config tiny), but model.dino='fovea/tiny-dinov2'" in p.stderr


def test_the_readme_makes_every_shard_set_the_stage_configs_read():
    from fovea.pipelines.preprocess import resolve_output
    from fovea.pipelines.shard_sets import shard_folder

    made = set()
    for m in re.finditer(r"^python jobs/preprocess\.py (\w+)\s+--input \S+\s+--output (\S+)\s+--stage (\d)",
                         (REPO / "README.md").read_text(), re.M):
        made.add(str(resolve_output(m[1], m[2], int(m[3]))))
    read = set()
    for stage in (1, 2, 3):
        d = load_config(f"stage{stage}_135m").data
        read |= {str(shard_folder(p)) for p in d.train_shards + d.val_shards + d.text_shards}
    assert {"data/shards/smoltalk_s2", "data/shards/smoltalk_s3", "data/shards/cauldron"} <= read
    assert read <= made, f"no README command makes {sorted(read - made)}"


def staged_set(folder: Path, stage: int, manifest: bool) -> str:
    """A shard folder whose one sample says ``stage``, with or without a manifest that says it too."""
    import json

    from fovea.pipelines.shards import ShardWriter

    folder.mkdir(parents=True, exist_ok=True)
    w = ShardWriter(folder / "train-00000.tar")
    w.add("v0", json.dumps({"user": "u", "assistant": "a", "source": "s", "frame_count": 0, "token_ids": [1, 2],
                            "loss_mask": [1, 1], "is_text_only": True, "stage": stage}), [])
    w.commit()
    if manifest:
        (folder / "manifest.json").write_text(json.dumps({"dataset": "webvid", "settings": {"stage": stage}}))
    return str(folder / "train-*.tar")


def test_shards_of_another_stage_stop_the_run_before_ray(tmp_path, monkeypatch):
    """Shards are tokenized for one stage (DESIGN.md 2.3): stage-1 shards (loss on all text) in a
    stage-2 run stop it in the driver, naming the folder, its stage and the preprocess command;
    stages 2 and 3 share their rule; data.check_shard_stage=false reads them as the reference does."""
    import ray

    from fovea.platform.train.preflight import RunInputError, check_shards
    from fovea.platform.train.trainer import fit

    monkeypatch.chdir(tmp_path)
    ray_before = ray.is_initialized()  # an earlier test of the session may have started one
    webvid = staged_set(Path("data/shards/webvid"), 1, manifest=True)
    talk = staged_set(Path("data/shards/smoltalk_s1"), 1, manifest=False)  # the sample JSON says it
    cfg = tiny(tmp_path, f"data.train_shards=['{webvid}']", f"data.text_shards=['{talk}']", "training.stage=2")
    with pytest.raises(RunInputError) as e:
        fit(cfg)
    msg = str(e.value)
    assert msg.startswith("this is a stage-2 run (loss on the answer only), but some of its shards were tokenized")
    assert "data.train_shards: data/shards/webvid holds stage-1 shards (loss on all text)" in msg
    assert "data.text_shards: data/shards/smoltalk_s1 holds stage-1 shards (loss on all text)" in msg
    assert "python jobs/preprocess.py webvid --input /path/to/raw/webvid --output data/shards/webvid_s2 --stage 2" in msg
    assert "python jobs/preprocess.py smoltalk --input /path/to/raw/smoltalk --output data/shards/smoltalk --stage 2" in msg
    assert "data.check_shard_stage=false" in msg
    assert ray.is_initialized() == ray_before and not (tmp_path / "runs").exists()
    check_shards(tiny(tmp_path, f"data.train_shards=['{webvid}']", f"data.text_shards=['{talk}']",
                      "training.stage=2", "data.check_shard_stage=false"))  # the reference's behaviour
    check_shards(tiny(tmp_path, f"data.train_shards=['{webvid}']", f"data.text_shards=['{talk}']"))  # stage 1
    sft = staged_set(Path("data/shards/video_sft"), 2, manifest=True)
    check_shards(tiny(tmp_path, f"data.train_shards=['{sft}']", "data.text_ratio=0", "training.stage=3"))
    with pytest.raises(RunInputError, match="data.val_shards: data/shards/video_sft holds stage-2 shards"):
        check_shards(tiny(tmp_path, f"data.train_shards=['{webvid}']", f"data.val_shards=['{sft}']",
                          "data.text_ratio=0"))


def test_a_bad_benchmarks_folder_stops_training_and_evaluation_before_ray(tmp_path, capsys):
    """eval.benchmarks_dir (scored at the end of training) and jobs/evaluate.py --benchmarks: a
    missing or empty folder, or one holding no benchmark in a known layout, ends in one line that
    names the key and the folder and lists the layouts, exit 2, before Ray or MLflow start."""
    import json
    import subprocess
    import sys

    import ray

    from fovea.platform.eval.benchmarks import BenchmarksDirError, check_benchmarks_dir
    from fovea.platform.stages import main

    ray_before = ray.is_initialized()
    train = shard_set(tmp_path / "shards")
    common = ["--config", "tiny", f"runs_dir={tmp_path / 'runs'}", f"data.train_shards=['{train}']",
              "data.text_ratio=0"]
    rc = main(1, [*common, f"eval.benchmarks_dir={tmp_path / 'nope'}"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: eval.benchmarks_dir={tmp_path / 'nope'} does not exist; expected at least one of: ")
    assert "<folder>/mlvu/MLVU/json/<task>.json (MLVU/MVLU)" in err and "mvbench/json/<task>.json" in err
    assert ray.is_initialized() == ray_before and not (tmp_path / "runs").exists()

    bench = tmp_path / "benchmarks"
    bench.mkdir()
    with pytest.raises(BenchmarksDirError, match=f"^eval.benchmarks_dir={bench} is empty; expected"):
        check_benchmarks_dir(bench)
    (bench / "mlvu" / "MLVU" / "video").mkdir(parents=True)  # the videos, not the annotations
    (bench / "notes.txt").write_text("x")
    with pytest.raises(BenchmarksDirError, match=r"holds no benchmark in a known layout \(it has mlvu/, notes.txt\)"):
        check_benchmarks_dir(bench, "--benchmarks")
    (bench / "mlvu" / "MLVU" / "json").mkdir()
    (bench / "mlvu" / "MLVU" / "json" / "4_count.json").write_text(json.dumps([]))
    assert check_benchmarks_dir(bench) == {"mlvu": bench / "mlvu"}
    (bench / "MVBench" / "json").mkdir(parents=True)
    (bench / "MVBench" / "json" / "action_count.json").write_text(json.dumps([]))
    assert check_benchmarks_dir(bench) == {"mlvu": bench / "mlvu", "mvbench": bench / "MVBench"}
    with pytest.raises(BenchmarksDirError, match=rf"MVBench is the mvbench folder itself \(pass its parent, {bench}\)"):
        check_benchmarks_dir(bench / "MVBench")

    # jobs/evaluate.py, as a user runs it: exit 2 and one line, no Ray, no MLflow store
    empty = tmp_path / "empty"
    empty.mkdir()
    p = subprocess.run([sys.executable, str(REPO / "jobs" / "evaluate.py"), "--checkpoint", str(tmp_path / "ckpt"),
                        "--config", "tiny", "--benchmarks", str(empty), f"runs_dir={tmp_path / 'runs'}"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 2, p.stderr[-2000:]
    lines = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert lines == [line for line in p.stderr.splitlines() if line.strip()][-1:] and "Traceback" not in p.stderr
    assert lines[0].startswith(f"error: --benchmarks={empty} is empty; expected at least one of: ")
    assert not (tmp_path / "runs").exists()


def wait_for(what: str, cond, limit_s: float, proc, log: Path, every_s: float = 0.5):
    """Poll ``cond()`` until it is truthy; fails naming ``what`` with the driver's last lines when
    ``limit_s`` passes or the driver exits first."""
    import time

    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        value = cond()
        if value:
            return value
        if proc.poll() is not None:
            break
        time.sleep(every_s)
    pytest.fail(f"{what}: not within {limit_s:.0f} s (driver rc {proc.poll()}); its log ends:\n"
                + "\n".join(log.read_text(errors="replace").splitlines()[-25:]))


@pytest.mark.extended
@pytest.mark.slow
def test_ctrl_c_marks_the_run_killed(tmp_path, tokenizer, model_store):
    """jobs/stage1.py on a local Ray cluster, interrupted once training has logged a step (SIGINT
    to the driver, as Ctrl-C sends it): exit 130, the MLflow run KILLED with an end time."""
    import os
    import signal
    import sqlite3
    import subprocess
    import sys

    from colour_shards import write_colour_shards
    from mlflow.tracking import MlflowClient

    shards = write_colour_shards(tmp_path / "shards", tokenizer, n_train=16, n_val=0, n_text=8)
    runs = tmp_path / "runs"
    # its own local cluster, and the store under runs_dir
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    log = tmp_path / "driver.log"
    # Ctrl-C reaches a foreground process. A test run started as a background job of a
    # non-interactive shell inherits SIGINT ignored, and so would the driver (Python installs no
    # KeyboardInterrupt handler then): it starts through a one-line exec that restores SIGINT.
    restore_sigint = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                      "os.execv(sys.executable, [sys.executable] + sys.argv[1:])")
    cmd = [sys.executable, "-c", restore_sigint, str(REPO / "jobs" / "stage1.py"), "--config", "tiny",
           "--name", "interrupted", f"runs_dir={runs}", f"data.train_shards=['{shards['train']}']",
           f"data.text_shards=['{shards['text']}']",
           "data.val_shards=[]", "training.max_steps=100000", "training.checkpoint_every=100000",
           "cluster.num_workers=1", "cluster.cpus_per_worker=1"]
    db = runs / "mlflow.db"

    def losses_logged() -> int:
        if not db.exists():
            return 0
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
                return c.execute("SELECT COUNT(*) FROM metrics WHERE key = 'loss'").fetchone()[0]
        except sqlite3.OperationalError:  # the tables are not made yet
            return 0

    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, env=env,
                                start_new_session=True)
    try:
        wait_for("a logged training step", losses_logged, 240, proc, log)
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=90)
    finally:
        if proc.poll() is None:  # only what this test started: the driver's own process group
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    text = log.read_text(errors="replace")
    assert rc == 130, text[-3000:]
    assert "interrupted: run interrupted stopped, its MLflow run marked KILLED" in text
    client = MlflowClient(f"sqlite:///{db}")
    (run,) = client.search_runs([client.get_experiment_by_name("fovea").experiment_id])
    assert run.info.status == "KILLED" and run.info.end_time is not None
    assert run.data.metrics["loss"] > 0
