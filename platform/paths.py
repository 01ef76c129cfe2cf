"""Where a run's relative paths point: resolved once, on the machine and in the directory the
user ran the command from, before any process that runs elsewhere sees them.

Configs name data, runs and checkpoints relative to the project (``data/demo/shards/...``,
``runs``). Three kinds of process run in another directory and would resolve them wrongly:
Ray Train workers, Ray Tune trials (each in a working directory of its own) and jobs sent with
``ray job submit --working-dir .``, which run in Ray's temporary copy of the working directory.
That copy leaves out git-ignored folders such as ``data/`` and is deleted by Ray, so runs
written there are lost.

``FOVEA_ROOT`` is the project directory relative paths resolve against when it is set: a local
directory, a volume every node mounts, or an fsspec URL (``s3://bucket/project``). Unset, they
resolve against the current directory, except in a submitted job, which has no directory of the
user's to go by: there a relative path stops the run with a message that says what to set.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

ROOT_ENV = "FOVEA_ROOT"
# The job supervisor hands its driver the job's runtime_env through this variable.
RAY_JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


class RootError(ValueError):
    """A relative path that cannot be placed: names the key, the path and what to set."""


def is_url(path: str) -> bool:
    return "://" in path


def submitted_working_dir() -> str | None:
    """The ``--working-dir`` of the Ray job this process is the driver of, else None."""
    raw = os.environ.get(RAY_JOB_CONFIG_ENV)
    if not raw:
        return None
    try:
        runtime_env = json.loads(raw).get("runtime_env") or {}
    except (ValueError, AttributeError):
        return None
    wd = runtime_env.get("working_dir")
    return str(wd) if wd else None


def project_root(key: str = "a relative path", value: str = "") -> str:
    """``FOVEA_ROOT`` (a path made absolute, or a URL), else the current directory; in a job
    submitted with a working directory and no ``FOVEA_ROOT``, a ``RootError`` naming ``key``."""
    root = os.environ.get(ROOT_ENV, "").strip()
    if root:
        return root.rstrip("/") if is_url(root) else str(Path(root).expanduser().resolve())
    if submitted_working_dir() is not None:
        raise RootError(
            f"{key}={value!r} is relative, and this job runs in Ray's copy of its --working-dir "
            f"({Path.cwd()}), which leaves out git-ignored folders such as data/ and is deleted "
            f"when the job ends. Set {ROOT_ENV} to the project directory (or a volume every node "
            f"mounts, or s3://bucket/prefix): `export {ROOT_ENV}=$PWD` before `ray start --head`, or "
            f"ray job submit --runtime-env-json '{{\"env_vars\": {{\"{ROOT_ENV}\": \"'$PWD'\"}}}}' ...; "
            f"or give {key} as an absolute path or URL.")
    return str(Path.cwd())


def resolve(path: str, key: str = "a relative path", root: str | None = None) -> str:
    """``path`` made absolute against the project root; absolute paths and URLs unchanged."""
    if not path or is_url(path):
        return path
    p = Path(path).expanduser()
    if p.is_absolute():
        return str(p)
    base = root if root is not None else project_root(key, path)
    return f"{base}/{path}" if is_url(base) else str(Path(base) / p)


def resolve_checkpoint_ref(ref: str | None, key: str) -> str | None:
    """A checkpoint reference (``training.init_from``, ``--checkpoint``): one with a slash is a
    path or URL, resolved like any path; one without is an MLflow run id, kept as it is."""
    return resolve(ref, key) if ref and "/" in ref else ref
