"""Foundation: the import mapping, typed configs, and the offline model store."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fovea.platform.config import ConfigError, load_config


def test_stdlib_platform_is_not_shadowed(repo_root):
    # From the repo root, a bare `import platform` must still be the standard library.
    code = (
        "import platform, fovea.platform, fovea.model, fovea.pipelines, fovea.search_spaces;"
        "print(platform.system())"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Linux"
    assert not (repo_root / "platform" / "__init__.py").exists()


def test_stdlib_platform_inside_pytest():
    import platform

    assert platform.system() == "Linux"
    assert hasattr(platform, "python_version")


def test_typo_in_override_names_the_key():
    with pytest.raises(ConfigError) as err:
        load_config("stage1_135m", ["trainng.lr=1"])
    assert "trainng" in str(err.value)
    assert "stage1_135m.yaml" in str(err.value)


def test_typo_in_file_names_key_and_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  lr_conector: 1.0e-3\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    msg = str(err.value)
    assert "training.lr_conector" in msg and str(bad) in msg


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError) as err:
        load_config("stage1_135m", ["data.batch_size=eight"])
    assert "data.batch_size" in str(err.value)


def test_contradicting_model_keys_are_named():
    with pytest.raises(ConfigError) as err:  # the fused LLM layers run SDPA attention only
        load_config("stage1_135m", ["model.attn_implementation=eager"])
    msg = str(err.value)
    assert "model.attn_implementation=eager" in msg and "model.fused_llm_projections=false" in msg
    cfg = load_config("stage1_135m", ["model.attn_implementation=eager", "model.fused_llm_projections=false"])
    assert cfg.model.attn_implementation == "eager"


def test_stage_configs_carry_the_spec_values():
    s1 = load_config("stage1_135m")
    assert (s1.training.lr_connector, s1.training.lr_dino, s1.training.lr_llm) == (1e-3, 1e-5, 1e-5)
    assert s1.training.schedule == "converging" and s1.training.lr_target == 3e-5
    assert s1.data.batch_size * s1.training.grad_accum == 32
    assert s1.data.text_ratio == 0.14 and s1.training.stage == 1
    s2 = load_config("stage2_135m")
    assert s2.training.stage == 2 and s2.data.replicate_image_frames == 8
    assert s2.training.schedule == "cosine" and s2.training.lr_connector == 3e-5
    s3 = load_config("stage3_135m")
    assert s3.training.stage == 3 and s3.training.total_samples == 500_000


def test_overrides_apply_and_resolved_config_round_trips(tmp_path):
    cfg = load_config("demo", ["training.lr_connector=3e-4", "data.train_shards=['a/*.tar','b/*.tar']"])
    assert cfg.training.lr_connector == 3e-4
    assert cfg.data.train_shards == ["a/*.tar", "b/*.tar"]
    assert cfg.training.lr_dino == 1e-5  # inherited from stage1_135m through `base:`
    from fovea.platform.config import save_resolved

    p = save_resolved(cfg, tmp_path / "resolved.yaml")
    assert load_config(p) == cfg
    assert cfg.flat()["training.lr_connector"] == 3e-4


def test_model_refs_resolve_to_the_local_store(model_store):
    from fovea.model.store import is_random, resolve_model_ref

    assert resolve_model_ref("HuggingFaceTB/SmolLM2-135M-Instruct") == model_store["HuggingFaceTB/SmolLM2-135M-Instruct"]
    assert is_random("facebook/dinov2-small")
    assert not is_random("HuggingFaceTB/SmolLM2-135M-Instruct")
    # Hub ids with no published config here pass through unchanged (a connected machine downloads
    # them); the published ones are built on first use (tests/test_published_configs.py).
    assert resolve_model_ref("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"


def test_converted_smollm2_knows_the_capital_of_france(model_store, tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    path = model_store["HuggingFaceTB/SmolLM2-135M-Instruct"]
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    msgs = [
        {"role": "system", "content": "You are a helpful AI assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    enc = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**enc, max_new_tokens=16, do_sample=False)
    answer = tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer


def test_gpus_per_worker_reaches_the_ray_trainer():
    """cluster.gpus_per_worker (fractional: runs share a card) is what each Ray worker asks for."""
    from fovea.platform.config import ConfigError, load_config
    from fovea.platform.train.trainer import build_trainer

    cfg = load_config("stage1_135m", ["cluster.use_gpu=true", "cluster.gpus_per_worker=0.5", "cluster.num_workers=2"])
    sc = build_trainer(cfg, {}).scaling_config  # the ScalingConfig handed to Ray
    assert sc.use_gpu and sc.num_workers == 2 and sc.resources_per_worker["GPU"] == 0.5
    with pytest.raises(ConfigError, match="cluster.gpus_per_worker"):
        load_config("stage1_135m", ["cluster.gpus_per_worker=2"])


def test_workers_get_the_cuda_and_nccl_settings_but_not_the_gpu_choice():
    """What ``connect`` hands the job's Ray workers (runtime_env env_vars): a job submitted to a
    running cluster does not inherit the submitting shell's environment."""
    from fovea.platform.runs.cluster import worker_env

    env = worker_env({"CUDA_SCALE_LAUNCH_QUEUES": "4x", "NCCL_DEBUG": "INFO", "FOVEA_MODEL_STORE": "/m",
                      "CUDA_VISIBLE_DEVICES": "1", "HOME": "/root"})
    assert (env["CUDA_SCALE_LAUNCH_QUEUES"], env["NCCL_DEBUG"], env["FOVEA_MODEL_STORE"]) == ("4x", "INFO", "/m")
    assert "CUDA_VISIBLE_DEVICES" not in env and "HOME" not in env  # Ray assigns each worker its GPU
    assert env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert worker_env({"PYTORCH_CUDA_ALLOC_CONF": "backend:cudaMallocAsync"})["PYTORCH_CUDA_ALLOC_CONF"] \
        == "backend:cudaMallocAsync"


def test_gc_clock_times_pauses_and_counts_full_collections():
    import gc

    from fovea.platform.train.gc_clock import GcClock

    clock = GcClock().start()
    gc.disable()  # only the two collections below: no automatic one while the junk is built
    try:
        junk = [[i] for i in range(50_000)]
        for a, b in zip(junk, junk[1:]):  # reference cycles: only the collector frees them
            a.append(b), b.append(a)
        del junk, a, b
        gc.collect(1)
        gc.collect(2)
    finally:
        gc.enable()
        clock.stop()
    seconds, full = clock.read()
    assert full == 1 and seconds > 0
    gc.collect(2)  # stopped: no longer counted
    assert clock.read() == (seconds, full)
