"""Shards, checkpoints and run files on s3://, through a real S3-compatible HTTP server on
127.0.0.1 (moto's standalone server, tests/s3_server.py). The code under test reaches it with its
normal clients (s3fs, pyarrow through Ray, boto3 through MLflow), configured only by the AWS_*
environment, as a user sets it (README, Storage)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from scripts import load_script
from fovea.pipelines import storage
from fovea.pipelines.config import DataConfig


def write_samples(folder, n: int, per_shard: int, prefix: str = "train") -> list[dict]:
    """``n`` samples with 1-3 real JPEG frames into ``folder`` (a path or a URL) with the shard
    writer; returns the per-shard states, as preprocessing records them."""
    from fovea.pipelines.shards import ShardWriter, shard_name
    from fovea.pipelines.video import encode_jpeg

    jpgs = [encode_jpeg(np.full((224, 224, 3), 40 * k, np.uint8)) for k in range(3)]
    states = []
    for s in range(0, n, per_shard):
        name = shard_name(prefix, s // per_shard)
        w = ShardWriter(storage.join(folder, name))
        frames = []
        for i in range(s, min(n, s + per_shard)):
            f, ids = 1 + i % 3, list(range(1, 5 + i % 4))
            meta = {"user": f"q{i}", "assistant": f"a{i}", "source": "synthetic", "frame_count": f,
                    "token_ids": ids, "loss_mask": [0] + [1] * (len(ids) - 1), "is_text_only": False,
                    "stage": 1, "pad_id": 2}
            w.add(f"s{i:05d}", json.dumps(meta), jpgs[:f])
            frames.append(f)
        digest, size = w.commit()
        states.append((name, {"sha256": digest, "bytes": size, "num_samples": len(frames), "frame_counts": frames,
                              "token_counts": [5] * len(frames)}))
    return states


def keys_of(loader) -> list[str]:
    return [k for b in loader for k in b["keys"]]


def test_shards_write_list_stream_and_validate_on_s3(s3_bucket, tmp_path):
    """The shard writer uploads each tar whole; the loader lists and streams them from the
    bucket (in DataLoader workers) in the order it reads a local copy; the validator reads
    each once, with the manifest's sha256."""
    from s3_server import list_keys

    from fovea.pipelines.loader import build_train_loader
    from fovea.pipelines.shards import build_manifest, dumps_manifest, expand_shards, validate_shards, write_if_changed

    url, local = f"{s3_bucket}/shards/synthetic", tmp_path / "synthetic"
    for folder in (url, local):
        storage.makedirs(folder)
        states = write_samples(folder, 22, 6)
        write_if_changed(storage.join(folder, "manifest.json"), dumps_manifest(build_manifest(folder, states, {})))
    bucket = s3_bucket.removeprefix("s3://")
    assert list_keys(bucket) == [f"shards/synthetic/{n}" for n in
                                 ("manifest.json", "train-00000.tar", "train-00001.tar", "train-00002.tar",
                                  "train-00003.tar")]  # no .tmp object, nothing half-written
    tars = expand_shards([f"{url}/train-*.tar"])
    assert tars == [f"{url}/train-0000{i}.tar" for i in range(4)] == expand_shards(url)
    assert [storage.name(t) for t in tars] == [Path(t).name for t in expand_shards(str(local))]
    assert json.loads(storage.read_text(f"{url}/manifest.json"))["data_dir"] == url

    cfg = DataConfig(batch_size=3, shuffle_buffer=8, num_workers=1, train_shards=[f"{url}/train-*.tar"])
    remote = keys_of(build_train_loader(cfg, rank=0, world_size=1, epoch=0, seed=3))
    cfg_local = cfg.model_copy(update={"train_shards": [str(local / "train-*.tar")]})
    assert remote == keys_of(build_train_loader(cfg_local, rank=0, world_size=1, epoch=0, seed=3))
    assert sorted(remote) == [f"s{i:05d}" for i in range(22)]

    rep = validate_shards(url)
    assert rep.ok and rep.samples == 22, rep.summary()
    storage.write_bytes(f"{url}/train-00001.tar", (local / "train-00002.tar").read_bytes())  # a wrong shard
    rep = validate_shards(url)
    assert not rep.ok and "train-00001.tar: sha256 differs from manifest.json" in rep.errors


def real_checkpoint(tmp_path: Path):
    """A checkpoint written by the training code (tiny model, AdamW, schedule), and the model."""
    from fovea.model import build_model
    from fovea.model.config import ModelConfig
    from fovea.platform.runs import checkpoints as ck

    torch.manual_seed(0)
    model = build_model(ModelConfig(llm="fovea/tiny-llama", dino="fovea/tiny-dinov2"))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    path = ck.write_checkpoint(tmp_path / "ckpt", model, opt, sched, state={"step": 7, "samples_seen": 14},
                               meta={"step": 7, "metrics": {}})
    return path, model


def upload_checkpoint(src: Path, dest: str, step: int, val_loss: float) -> None:
    from fovea.platform.runs import checkpoints as ck

    storage.put_dir(src, dest)
    meta = {**ck.read_meta(src), "step": step, "metrics": {"val_loss": val_loss}}
    storage.write_text(storage.join(dest, ck.META), json.dumps(meta))


def test_checkpoints_list_latest_best_and_load_from_s3(s3_bucket, tmp_path, model_store):
    from fovea.model import build_model
    from fovea.platform.eval.checkpoint import load_model_for_eval, resolve_checkpoint
    from fovea.platform.eval.launch import parent_run_tags, training_config_of
    from fovea.platform.runs import checkpoints as ck
    from fovea.platform.train.checkpointing import load_weights

    src, model = real_checkpoint(tmp_path)
    run = f"{s3_bucket}/runs/ray/tiny"
    for i, (step, loss) in enumerate([(10, 3.0), (20, 1.0), (30, 2.0)], start=1):
        upload_checkpoint(src, f"{run}/checkpoint_00000{i}", step, loss)
    upload_checkpoint(src, f"{run}/checkpoint_000004", 40, 0.5)
    storage.remove(f"{run}/checkpoint_000004/model/model.safetensors")  # copied only in part
    upload_checkpoint(src, f"{run}/checkpoint_000005", 50, 0.4)
    storage.write_bytes(f"{run}/checkpoint_000005/train_state.pt", b"cut short")  # not its written size
    storage.write_text(f"{run}/resolved_config.yaml", "name: tiny\n")
    storage.write_text(f"{run}/mlflow_run_id", "0" * 32)

    assert [storage.name(p) for p in ck.list_checkpoints(run)] == [f"checkpoint_00000{i}" for i in (1, 2, 3)]
    assert ck.latest_checkpoint(run) == f"{run}/checkpoint_000003"
    assert ck.best_checkpoint(run) == f"{run}/checkpoint_000002"
    assert ck.best_checkpoint(run, mode="max") == f"{run}/checkpoint_000001"
    assert ck.list_checkpoints(f"{run}/no-such-run") == []
    assert ck.read_train_state(f"{run}/checkpoint_000001")["step"] == 7

    # training.init_from / evaluate --checkpoint naming the run dir on S3: its best checkpoint's model
    model_dir = ck.resolve_init_from(run)
    assert model_dir == f"{run}/checkpoint_000002/model" == resolve_checkpoint(run)
    fresh = build_model(model.cfg)
    load_weights(fresh, model_dir)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    loaded, tok = load_model_for_eval(model_dir)  # from a temporary local copy
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    assert tok.pad_token_id is not None
    assert Path(training_config_of(f"{run}/checkpoint_000002")).read_text() == "name: tiny\n"
    assert parent_run_tags(model_dir) == {"mlflow.parentRunId": "0" * 32}
    with pytest.raises(FileNotFoundError, match="no such path"):
        ck.resolve_init_from(f"{s3_bucket}/runs/ray/none")


def test_metrics_log_appends_to_an_object(s3_bucket):
    url = f"{s3_bucket}/runs/ray/x/metrics.jsonl"
    log = storage.AppendLog(url)
    log.write_line('{"step": 1}')
    log.write_line('{"step": 2}')
    assert not storage.exists(url)  # uploaded on sync (with each checkpoint)
    log.sync()
    again = storage.AppendLog(url)  # a restarted worker carries on from the object
    again.write_line('{"step": 3}')
    again.sync()
    assert storage.read_text(url).splitlines() == ['{"step": 1}', '{"step": 2}', '{"step": 3}']


def test_a_missing_bucket_or_a_wrong_endpoint_is_named(s3_bucket, s3_server, monkeypatch):
    from ports import free_port

    from fovea.pipelines.shards import expand_shards
    from fovea.platform.config import load_config
    from fovea.platform.train.preflight import RunInputError, check_run_inputs, check_shards

    missing = "s3://no-such-bucket-fovea/shards/webvid/train-*.tar"
    with pytest.raises(storage.StorageError) as e:
        expand_shards([missing])
    msg = str(e.value)
    assert msg.startswith(f"cannot list {missing}: FileNotFoundError: bucket 'no-such-bucket-fovea' does not exist")
    assert f"AWS_ENDPOINT_URL={s3_server.endpoint}" in msg and "AWS_ACCESS_KEY_ID set" in msg
    assert "fovea-local" not in msg  # the keys themselves are never printed
    cfg = load_config("tiny", [f"data.train_shards=['{missing}']"])
    with pytest.raises(RunInputError, match="this run's shards cannot be read: cannot list s3://no-such-bucket"):
        check_shards(cfg)
    storage.write_bytes(f"{s3_bucket}/shards/train-00000.tar", b"")  # shards there, checkpoints not
    cfg = load_config("tiny", [f"data.train_shards=['{s3_bucket}/shards/*.tar']", "data.val_shards=[]",
                               "runs_dir=s3://no-such-bucket-fovea/runs", "tracking.tracking_uri=sqlite:///unused.db"])
    with pytest.raises(RunInputError) as e:
        check_run_inputs(cfg)
    assert str(e.value).startswith("this run's checkpoints cannot be written (runs_dir='s3://no-such-bucket-fovea/runs'): "
                                   "cannot list s3://no-such-bucket-fovea/runs/ray: FileNotFoundError: bucket")

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's retries (a user's setting too)
    t0 = time.monotonic()
    with pytest.raises(storage.StorageError) as e:
        expand_shards([f"{s3_bucket}/shards/*.tar"])
    assert time.monotonic() - t0 < 30
    assert "EndpointConnectionError" in str(e.value) and f"AWS_ENDPOINT_URL={dead}" in str(e.value)
    with pytest.raises(storage.StorageError, match="cannot read"):
        storage.read_bytes(f"{s3_bucket}/x")


def test_a_dropped_connection_is_read_again(s3_bucket, s3_server, monkeypatch, caplog):
    """A proxy cuts the object's response mid-body 7 times: s3fs retries a fetch 5 times, then the
    stream reopens the object at the byte it had reached and the rest comes through whole."""
    import logging
    import os

    from s3_server import CuttingProxy

    data = os.urandom(1_500_000)
    storage.write_bytes(f"{s3_bucket}/blob.tar", data)
    proxy = CuttingProxy(s3_server.port, cuts=7)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        with caplog.at_level(logging.WARNING, logger="fovea.pipelines.storage"), \
                storage.open_read(f"{s3_bucket}/blob.tar") as f:
            got = f.read()
    finally:
        proxy.stop()
    assert got == data and proxy.cuts_done == 7
    assert f"reading {s3_bucket}/blob.tar at byte 0 failed (ClientPayloadError" in caplog.text


# -- end to end ----------------------------------------------------------------------------------

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 220), "yellow": (230, 220, 40)}


def colour_webvid(root: Path, n: int) -> Path:
    """A WebVid download in its upstream layout: ``n`` real H.264 clips of one colour each
    (3 s at 2 fps) and a results CSV whose captions name the colour."""
    import csv

    from fovea.pipelines.demo_datasets import write_video

    rows = []
    for i in range(n):
        name = list(COLOURS)[i % len(COLOURS)]
        frame = np.zeros((96, 128, 3), np.uint8) + np.array(COLOURS[name], np.uint8)
        write_video(root / "videos" / f"{i}.mp4", [frame] * 6, 2)
        rows.append([str(i), f"videos/{i}.mp4", "PT00H00M03S", "", f"A {name} screen."])
    with open(root / "results_colours.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["videoid", "contentUrl", "duration", "page_dir", "name"])
        w.writerows(rows)
    return root


def run_job(repo_root: Path, name: str, argv: list[str]) -> int:
    """A ``jobs/<name>.py`` entry point, in this process (its Ray cluster is this test's)."""
    return load_script(f"jobs/{name}.py").main(argv)


@pytest.mark.slow
def test_preprocess_train_resume_evaluate_with_every_path_on_s3(s3_bucket, tmp_path, monkeypatch, model_store,
                                                                repo_root):
    """FOVEA_ROOT=s3://<bucket>/proj: the relative paths of the commands a user types
    (data/shards/..., runs, eval/...) land in the bucket; MLflow keeps its runs in SQLite and
    its artifacts in the bucket (tracking.artifact_location)."""
    import ray
    from mlflow.tracking import MlflowClient
    from s3_server import list_keys

    from fovea.platform.config import load_config
    from fovea.platform.runs import checkpoints as ck
    from fovea.platform.runs.cluster import connect
    from fovea.platform.stages import train_stage

    bucket, root = s3_bucket.removeprefix("s3://"), f"{s3_bucket}/proj"
    monkeypatch.setenv("FOVEA_ROOT", root)
    for k in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        monkeypatch.delenv(k, raising=False)
    raw = colour_webvid(tmp_path / "raw" / "webvid", 12)
    if ray.is_initialized():  # another module's cluster: its workers lack this environment
        ray.shutdown()
    connect("local")  # a new cluster (never one `ray start` left on the machine), with this environment
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ["name=s3run", "data.train_shards=['data/shards/webvid/train-*.tar']",
              "data.val_shards=['data/shards/webvid/val-*.tar']", f"tracking.tracking_uri={uri}",
              f"tracking.artifact_location={s3_bucket}/mlartifacts", "tracking.experiment=s3",
              "training.checkpoint_every=2", "data.shuffle_buffer=0", "eval.max_samples=2"]
    try:
        assert run_job(repo_root, "preprocess", ["webvid", "--input", str(raw), "--output", "data/shards/webvid",
                                                 "--samples-per-shard", "4", "--val-fraction", "0.25", "-q",
                                                 "--validate", "2"]) == 0
        first = train_stage(load_config("tiny", common + ["training.max_steps=4"]))
        resumed = train_stage(load_config("tiny", common + ["training.max_steps=6"]))
        assert run_job(repo_root, "evaluate", ["--checkpoint", "runs/ray/s3run", "--out", "eval/results.json",
                                               "--mode", "coarse_fine", "--max-samples", "2", "--captions", "0",
                                               "--no-reference", "--quiet", "eval.heatmap_videos=1"]) == 0
    finally:
        ray.shutdown()

    keys = list_keys(bucket)
    shards = [k.removeprefix("proj/data/shards/webvid/") for k in keys if k.startswith("proj/data/shards/webvid/")]
    assert {"manifest.json", "rejects.jsonl", "train-00000.tar", "val-00000.tar"} <= set(shards), shards
    run_dir = f"{root}/runs/ray/s3run"
    assert resumed.run_dir == run_dir and resumed.mlflow_run_id == first.mlflow_run_id
    assert ck.read_meta(first.latest_checkpoint)["step"] == 4 and ck.read_meta(resumed.latest_checkpoint)["step"] == 6
    assert str(resumed.latest_checkpoint).startswith(f"{run_dir}/checkpoint_")
    assert {"mlflow_run_id", "resolved_config.yaml", "metrics.jsonl"} <= set(storage.listdir(run_dir))
    steps = [json.loads(line)["step"] for line in storage.read_text(f"{run_dir}/metrics.jsonl").splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # the second run went on from step 4's checkpoint
    client = MlflowClient(uri)
    train = client.get_run(first.mlflow_run_id)
    assert train.info.status == "FINISHED" and train.info.artifact_uri.startswith(f"{s3_bucket}/mlartifacts/")
    assert train.data.tags["latest_checkpoint"] == str(resumed.latest_checkpoint)
    art = train.info.artifact_uri.removeprefix(f"{s3_bucket}/")  # mlartifacts/<experiment>/<run id>/artifacts
    assert {f"{art}/resolved_config.yaml", f"{art}/plots/loss_overlay.png"} <= set(keys)

    res = json.loads(storage.read_text(f"{root}/eval/results.json"))
    assert res["loss"]["coarse_fine"]["n_samples"] == 2 and res["checkpoint"].startswith(f"{run_dir}/checkpoint_")
    assert res["files"]["results.md"] == f"{root}/eval/results_files/results.md"
    assert "| val loss (n=2) |" in storage.read_text(res["files"]["results.md"])
    assert storage.size(res["files"]["attention_grid.png"]) > 1000
    ev = client.get_run(res["mlflow_run_id"])
    assert ev.info.status == "FINISHED" and ev.data.tags["mlflow.parentRunId"] == first.mlflow_run_id
    ev_art = ev.info.artifact_uri.removeprefix(f"{s3_bucket}/")
    assert any(k.startswith(f"{ev_art}/") and k.endswith("/results.md") for k in keys), [k for k in keys if ev_art in k]
