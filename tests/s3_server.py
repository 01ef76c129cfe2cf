"""The S3-compatible server of the tests (moto's standalone server on 127.0.0.1:
``fovea.platform.runs.local_s3``), the keys in a bucket, and a proxy that drops
connections in front of it. The code under test reaches the server through its normal clients,
configured by the environment (``S3Server.environment()``)."""

from __future__ import annotations

from fovea.platform.runs.local_s3 import LocalS3 as S3Server  # noqa: F401 - conftest starts it


def list_keys(bucket: str, prefix: str = "") -> list[str]:
    import boto3

    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


class CuttingProxy:
    """A TCP proxy in front of the server that drops connections mid-response: the first
    ``cuts`` connections whose responses pass ``cut_after`` bytes are closed there (object
    bodies; listings and HEADs are far smaller). A real transient failure, over real sockets."""

    def __init__(self, upstream_port: int, cuts: int, cut_after: int = 64 * 1024):
        import socket
        import threading

        self.upstream_port, self.cuts_left, self.cut_after, self.cuts_done = upstream_port, cuts, cut_after, 0
        self._lock = threading.Lock()
        self._srv = socket.create_server(("127.0.0.1", 0))
        self.port = self._srv.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self._srv.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _should_cut(self) -> bool:
        with self._lock:
            if self.cuts_left <= 0:
                return False
            self.cuts_left -= 1
            self.cuts_done += 1
            return True

    def _pump(self, src, dst, downstream: bool) -> None:
        import socket

        sent = 0
        try:
            while data := src.recv(16384):
                if downstream and sent + len(data) > self.cut_after and sent <= self.cut_after and self._should_cut():
                    dst.sendall(data[: self.cut_after - sent])
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def stop(self) -> None:
        self._srv.close()
