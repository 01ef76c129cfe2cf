"""Shared fixtures. Tests run on CPU with the offline model store (`make assets`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_AUTH_MODE", "token")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def model_store() -> dict[str, str]:
    """Ensure the offline store exists (idempotent; `make test` builds it first)."""
    from fovea.model.store import prepare_store

    return prepare_store()


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
