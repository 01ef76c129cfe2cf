#!/usr/bin/env python3
"""Container HEALTHCHECK: checks what the entrypoint's role started (docker/entrypoint.sh).

    head    Ray GCS through the dashboard (/api/gcs_healthz, exempt from token auth)
            and the MLflow server (/health)
    worker  a raylet process is alive
    other   (job, smoke, a shell): healthy while the container runs

Exit 0 = healthy, 1 = unhealthy. Standard library only.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

ROLE_FILE = Path(os.environ.get("FOVEA_ROLE_FILE", "/tmp/fovea-role"))


def _local(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


def http_ok(url: str, timeout: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (local URL)
            return 200 <= r.status < 300
    except OSError as e:
        print(f"unhealthy: {url}: {e}", file=sys.stderr)
        return False


def raylet_alive() -> bool:
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if cmd.endswith(b"/raylet") or cmd == b"raylet":
            return True
    print("unhealthy: no raylet process", file=sys.stderr)
    return False


def main() -> int:
    role = ROLE_FILE.read_text().strip() if ROLE_FILE.exists() else ""
    env = os.environ.get
    if role == "head":
        ray = f"http://{_local(env('RAY_DASHBOARD_HOST', ''))}:{env('RAY_DASHBOARD_PORT', '8265')}/api/gcs_healthz"
        mlf = f"http://{_local(env('MLFLOW_HOST', ''))}:{env('MLFLOW_PORT', '5000')}/health"
        return 0 if (http_ok(ray) and http_ok(mlf)) else 1
    if role == "worker":
        return 0 if raylet_alive() else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
