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
    from fovea.platform.model_store import prepare_store

    return prepare_store(include_base=False)


@pytest.fixture(scope="session")
def tokenizer(model_store):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_store["HuggingFaceTB/SmolLM2-135M-Instruct"])
