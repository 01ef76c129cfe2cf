#!/usr/bin/env python
"""Start the MLflow UI on the project's store: `make ui` (127.0.0.1:5000 by default).

    python jobs/mlflow_ui.py [--runs-dir runs] [--host 127.0.0.1] [--port 5000]

Binds to 127.0.0.1 unless told otherwise; on a remote machine, tunnel it:
`ssh -N -L 5000:127.0.0.1:5000 user@host`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def server_command(store: Path, host: str, port: int) -> list[str]:
    artifacts = store.parent / "mlartifacts"
    return [sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{store.resolve()}",
            "--default-artifact-root", str(artifacts.resolve()),
            "--host", host, "--port", str(port), "--workers", "1"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5000)
    a = ap.parse_args()
    store = Path(a.runs_dir) / "mlflow.db"
    if not store.exists():
        sys.exit(f"no MLflow store at {store}: run `make demo` (or a training job) first")
    cmd = server_command(store, a.host, a.port)
    print(f"MLflow UI: http://{a.host}:{a.port}  (store {store}); Ctrl-C stops it", flush=True)
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
