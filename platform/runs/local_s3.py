"""An S3-compatible server on this machine, for the tests and ``jobs/bench/bench_storage.py``:
moto's standalone server (``moto_server``, from ``moto[server]``, a dev dependency), started as a
process of its own on a free port of 127.0.0.1 and stopped by its PID.

    with LocalS3(log_path) as s3:
        os.environ.update(s3.environment())      # what a user sets for MinIO or S3 (README, Storage)
        s3.create_bucket("fovea")

The code under test reaches it as it reaches any S3 endpoint: through its normal clients
(s3fs, pyarrow, boto3), configured by the environment (``fovea.pipelines.storage``).
"""

from __future__ import annotations

import atexit
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def moto_command() -> list[str]:
    exe = Path(sys.executable).with_name("moto_server")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("moto_server")
    if found is None:
        raise RuntimeError('moto_server is not installed: pip install "moto[server]" (the dev extra)')
    return [found]


class LocalS3:
    """``moto_server -H 127.0.0.1 -p PORT``, answering at ``endpoint`` once constructed."""

    def __init__(self, log_path: str | Path):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([*moto_command(), "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self._log, stderr=subprocess.STDOUT)
        atexit.register(self.stop)  # also when the caller never gets to its own stop()
        self._wait()

    def _wait(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"moto_server did not answer on {self.endpoint} within {START_TIMEOUT_S:.0f} s: "
                           f"{self.log_path.read_text()[-2000:]}")

    def environment(self) -> dict[str, str]:
        """The settings a user gives an S3-compatible server's clients (moto accepts any keys)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "fovea-local",
                "AWS_SECRET_ACCESS_KEY": "fovea-local", "AWS_DEFAULT_REGION": "us-east-1"}

    @staticmethod
    def create_bucket(name: str) -> None:
        """A bucket, made with boto3 configured from the environment (as an operator would)."""
        import boto3

        boto3.client("s3").create_bucket(Bucket=name)

    def stop(self) -> None:
        atexit.unregister(self.stop)
        if self.proc.poll() is None:
            self.proc.terminate()  # this process only, by its PID
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()

    def __enter__(self) -> "LocalS3":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
