"""Connecting to Ray: an existing cluster (address / RAY_ADDRESS) or a local one we start.

``ray job submit --working-dir . -- python jobs/stage1.py`` runs the entry point on the
head node with RAY_ADDRESS set, so ``connect`` joins that cluster; a plain
``python jobs/stage1.py`` starts a local cluster sized to the machine.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("fovea.cluster")


# Settings that the training workers must see when the job joins a running cluster (``ray job
# submit``: the workers do not inherit the submitting shell's environment). CUDA reads
# CUDA_SCALE_LAUNCH_QUEUES when it starts: "4x" gives each stream a 4x longer launch queue, so a
# host blocked on "Command Buffer Full" can run further ahead of the GPU.
# Object storage (fovea.pipelines.storage): the endpoint and region go with the job, so that every
# worker reaches the store its driver does; the keys do not (runtime_env shows in Ray's dashboard
# and job list): each node holds its own (docker/README.md, Storage).
PASSED_TO_WORKERS = ("FOVEA_MODEL_STORE", "HF_HOME", "HF_HUB_OFFLINE", "CUDA_SCALE_LAUNCH_QUEUES",
                     "CUDA_DEVICE_MAX_CONNECTIONS", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION",
                     "MLFLOW_S3_ENDPOINT_URL")


def worker_env(environ: dict[str, str]) -> dict[str, str]:
    """The environment the job's Ray workers get: our defaults, then ``PASSED_TO_WORKERS`` and
    every ``NCCL_*`` setting from ``environ`` (CUDA_VISIBLE_DEVICES stays Ray's to set)."""
    env = {"PYTHONDONTWRITEBYTECODE": environ.get("PYTHONDONTWRITEBYTECODE", "1"),
           "TOKENIZERS_PARALLELISM": "false",
           # Batch shapes change every step (frames, text lengths): growable segments keep the
           # caching allocator from cudaFree/cudaMalloc cycles (DESIGN.md 4.4). No effect on CPU.
           "PYTORCH_CUDA_ALLOC_CONF": environ.get("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")}
    env.update({k: v for k, v in environ.items() if k in PASSED_TO_WORKERS or k.startswith("NCCL_")})
    return env


def connect(address: str | None = None, num_cpus: int | None = None, quiet: bool = True):
    """ray.init for an address, RAY_ADDRESS, or a fresh local cluster. Idempotent."""
    import ray

    if ray.is_initialized():
        return ray
    env = worker_env(dict(os.environ))
    kwargs = dict(runtime_env={"env_vars": env}, log_to_driver=True)
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        log.info("joining Ray cluster at %s", address)
        ray.init(address=address, **kwargs)
    else:
        log.info("starting a local Ray cluster")
        # "local": a cluster of its own, never one a `ray start` left running on this machine
        # (ray.init() with no address joins that one; --address auto does it on purpose).
        ray.init(address="local", num_cpus=num_cpus, configure_logging=quiet, **kwargs)
    return ray


def cluster_gpus() -> int:
    import ray

    return int(ray.cluster_resources().get("GPU", 0))


def cluster_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 0))


def want_gpu(use_gpu) -> bool:
    """``cluster.use_gpu``: True/False, or "auto" = use GPUs when the cluster has any."""
    if use_gpu == "auto":
        return cluster_gpus() > 0
    return bool(use_gpu)
