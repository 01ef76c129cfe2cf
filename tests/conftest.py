"""Shared fixtures. Tests run on CPU with the offline model store (`make assets`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_AUTH_MODE", "token")
# Ray Train's controller for the tests' few-step runs (every Ray process the tests start inherits
# this environment: local clusters, `ray start`, the sweep CLI). It learns that training ended, a
# worker died or a checkpoint was reported only when it next polls the workers, and a worker that
# reported a checkpoint waits for that poll: every 2 s by default, 0.5 s here (a missed poll still
# counts as a failure only after 10 minutes). No test uses the PreemptionWatcher actor (it watches
# cloud nodes being drained), which costs a process per worker group. Together 5-10 s per run.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def model_store() -> dict[str, str]:
    """Ensure the offline store exists (idempotent; `make test` builds it first)."""
    from fovea.model.store import prepare_store

    return prepare_store()


@pytest.fixture(scope="session")
def standin_tiny(model_store) -> Path:
    """The tiny glyph stand-in for DINOv2 (``fovea/standin-tiny-dinov2-glyphs``, NOT DINOv2), its
    real spec built on the CPU into the model store once (~1 min on 2 cores), reused while current."""
    from fovea.platform.check.standin import TINY, ensure_standin

    return ensure_standin(TINY, device="cpu")


@pytest.fixture(scope="session")
def tokenizer(model_store):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_store["HuggingFaceTB/SmolLM2-135M-Instruct"])


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module: on a shared 2-core machine two OpenMP threads
    spin-wait under load and run small ops 20-50x slower (model tests use it)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3-compatible HTTP server on 127.0.0.1 (moto's: fovea.platform.runs.local_s3), for the session."""
    from s3_server import S3Server

    server = S3Server(tmp_path_factory.mktemp("moto") / "moto_server.log")
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch, request) -> str:
    """A fresh bucket on ``s3_server``, with the AWS_* variables set the way a user sets them
    for the code under test; returns ``s3://<bucket>``."""
    import re
    import uuid

    for k, v in s3_server.environment().items():
        monkeypatch.setenv(k, v)
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-" + uuid.uuid4().hex[:8]
    s3_server.create_bucket(name)
    return f"s3://{name}"
