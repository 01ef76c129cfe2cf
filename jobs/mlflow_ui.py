#!/usr/bin/env python
"""Start the MLflow UI on the project's store: `make ui` (127.0.0.1:5000 by default).

    python jobs/mlflow_ui.py [--runs-dir runs] [--host 127.0.0.1] [--port 5000]

Binds to 127.0.0.1 unless told otherwise; on a remote machine, tunnel it:
`ssh -N -L 5000:127.0.0.1:5000 user@host`.  Before the server starts, every experiment of the
store is marked as model training with its chart layout, and the links are printed: per
experiment, loss_fine / loss_coarse / their ratio for every training run, the same for the
latest training run, and that run's page (`fovea.platform.runs.ui_views`; docs/SWEEPS.md).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

from fovea.platform.paths import resolve
from fovea.platform.runs.ui_views import ui_links


def server_command(store: Path, host: str, port: int) -> list[str]:
    artifacts = store.parent / "mlartifacts"
    return [sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{store.resolve()}",
            "--default-artifact-root", str(artifacts.resolve()),
            "--host", host, "--port", str(port), "--workers", "1"]


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs-dir", default="runs", help="relative to FOVEA_ROOT if set, else to here")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5000)
    ap.add_argument("--quiet", action="store_true", help="do not print the experiments and their links")
    a = ap.parse_args()
    store = Path(resolve(a.runs_dir, "--runs-dir")) / "mlflow.db"
    if not store.exists():
        sys.exit(f"no MLflow store at {store}: run `make demo` (or a training job) first")
    if not port_free(a.host, a.port):
        sys.exit(f"{a.host}:{a.port} is in use (another `make ui`?): pass --port")
    cmd = server_command(store, a.host, a.port)
    base = f"http://{a.host}:{a.port}"
    print(f"MLflow UI: {base}  (store {store}); Ctrl-C stops it", flush=True)
    try:
        links = ui_links(f"sqlite:///{store.resolve()}", base)
    except Exception as e:  # noqa: BLE001 - the views are a convenience; the server still starts
        links = [f"  (could not mark the experiments: {type(e).__name__}: {e})"]
    if not a.quiet:
        print("\n".join(links), flush=True)
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
