"""Where shards, checkpoints and run files live: a local path or an fsspec URL (``s3://bucket/x``,
``gs://``, ``abfs://``, ...), behind the few operations the pipelines and the platform need.

    fs, path = filesystem("s3://bucket/shards/webvid")   # the fsspec client and its path
    glob("s3://bucket/shards/webvid/train-*.tar")         # full URLs, sorted
    with open_read(url) as f: ...                          # a read stream that retries
    write_bytes(url, data)                                 # whole, or not at all
    with local_dir(url) as d: ...                          # a folder a local reader can open

A local path keeps its local behaviour (writes go to ``<file>.tmp``, are fsynced and renamed;
``location`` gives a ``Path``); a URL goes through fsspec and stays a string. An object store has
no folders and no rename: a write is one PUT, which appears whole when it completes, so a
reader never sees half an object.

Settings. Every client the project uses reads the standard AWS variables itself: s3fs
(through aiobotocore/botocore), pyarrow's ``FileSystem.from_uri`` (what Ray Train and Ray Data
call for a URL storage path), boto3 and MLflow's S3 artifact store (boto3): ``AWS_ENDPOINT_URL``
(an S3-compatible server such as MinIO, Ceph or moto; unset: AWS), ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``. So nothing here passes an endpoint or a key.
(``pyarrow.fs.S3FileSystem()`` built by hand ignores AWS_ENDPOINT_URL, which is why Ray is
handed the URL and builds its own filesystem from it.)

Errors. A store that cannot be reached, refuses the keys or has no such bucket raises
``StorageError``, naming the URL and the settings in effect; a missing object stays a
``FileNotFoundError``. Reads of a shard stream retry transient failures (a dropped connection,
a timeout, a 5xx) on top of the client's own retries, from the byte they had reached.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import IO, Iterator, Union

log = logging.getLogger("fovea.pipelines.storage")

Location = Union[str, Path]  # a local Path, or a URL string
ENV_VARS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
SECRET_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
CLIENT_VARS = (*ENV_VARS, "AWS_REGION", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE")
READ_ATTEMPTS = 5  # per read of a stream, with 0.5, 1, 2, 4 s between them
READ_BLOCK = 8 << 20  # bytes a stream fetches ahead: a shard is read front to back once
# Errors that come from the store's client rather than from a file: module prefixes.
CLIENT_MODULES = ("botocore", "aiobotocore", "aiohttp", "urllib3", "requests", "google", "azure", "gcsfs", "adlfs")

_CLIENTS: dict[tuple, object] = {}


class StorageError(OSError):
    """The store cannot be reached, refuses the credentials, or the bucket is not there."""


def is_url(path: Location) -> bool:
    return "://" in str(path)


def location(path: Location) -> Location:
    """A local path as ``Path`` (``~`` expanded), a URL as a string without a trailing slash."""
    return str(path).rstrip("/") if is_url(path) else Path(path).expanduser()


def join(base: Location, *names: str) -> Location:
    if is_url(base):
        return "/".join([str(base).rstrip("/"), *(n.strip("/") for n in names)])
    return Path(base).expanduser().joinpath(*names)


def name(path: Location) -> str:
    return str(path).rstrip("/").rsplit("/", 1)[-1]


def parent(path: Location) -> Location:
    if is_url(path):
        return str(path).rstrip("/").rsplit("/", 1)[0]
    return Path(path).parent


def filesystem(path: Location):
    """``(fsspec filesystem, its path)`` for a local path or a URL."""
    import fsspec
    from fsspec.core import split_protocol, strip_protocol

    if not is_url(path):
        return fsspec.filesystem("file"), str(Path(path).expanduser().absolute())
    protocol, _ = split_protocol(str(path))
    return _client(protocol), strip_protocol(str(path))


def _client(protocol: str):
    # One client per process and settings: the clients read the environment when they are
    # built, so a process that changes AWS_* (a test, a notebook) gets a new one rather than
    # fsspec's cached instance. The listings cache is off: other processes (Ray workers,
    # other nodes) write the folders this one lists.
    import fsspec

    key = (protocol, os.getpid(), *(os.environ.get(v) for v in CLIENT_VARS))
    if key not in _CLIENTS:
        for quiet in ("botocore.credentials", "aiobotocore.credentials", "botocore.configprovider"):
            logging.getLogger(quiet).setLevel(logging.WARNING)  # "found credentials in ..." in every process
        _CLIENTS[key] = fsspec.filesystem(protocol, skip_instance_cache=True, use_listings_cache=False)
    return _CLIENTS[key]


# -- errors ----------------------------------------------------------------------------------------

def settings_line(url: str) -> str:
    """The settings a client of ``url``'s store reads, as they are now (keys: set or unset)."""
    if not str(url).startswith(("s3://", "s3a://")):
        return f"check the credentials fsspec's {str(url).split('://')[0]} filesystem reads"
    shown = []
    for v in ENV_VARS:
        val = os.environ.get(v)
        shown.append(f"{v} {'set' if val else 'unset'}" if v in SECRET_VARS else f"{v}={val or '(unset)'}")
    return ("the S3 clients read " + ", ".join(shown)
            + "; set them on every node (README, Storage)")


def storage_error(url: Location, action: str, cause: BaseException) -> StorageError:
    reason = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
    if isinstance(cause, FileNotFoundError) and "bucket" in reason.lower():
        reason = f"bucket {bucket_of(url)!r} does not exist"
    return StorageError(f"cannot {action} {url}: {type(cause).__name__}: {reason}. {settings_line(str(url))}")


def bucket_of(url: Location) -> str:
    return str(url).split("://", 1)[-1].split("/", 1)[0]


def is_store_error(e: BaseException) -> bool:
    """The store refused or could not be reached (not: this object is missing)."""
    if isinstance(e, StorageError):
        return False  # already explained
    if isinstance(e, FileNotFoundError):
        return "bucket" in str(e).lower()  # s3fs: "The specified bucket does not exist"
    if isinstance(e, (PermissionError, ConnectionError, TimeoutError)):
        return True
    return type(e).__module__.split(".")[0] in CLIENT_MODULES


@contextlib.contextmanager
def reaching(url: Location, action: str) -> Iterator[None]:
    """Client errors of a URL's store -> ``StorageError`` naming the URL and the settings."""
    try:
        yield
    except Exception as e:
        if is_url(url) and is_store_error(e):
            raise storage_error(url, action, e) from e
        raise


def check_bucket(url: Location) -> None:
    """For a URL whose listing came back empty: ``StorageError`` if its bucket is not there
    (an empty listing of a missing bucket is not an error to the client)."""
    if not is_url(url):
        return
    fs, _ = filesystem(url)
    with reaching(url, "list"):
        try:
            fs.ls(bucket_of(url))
        except FileNotFoundError as e:
            raise storage_error(url, "list", FileNotFoundError("no such bucket")) from e


# -- reading and listing -----------------------------------------------------------------------------

def exists(path: Location) -> bool:
    fs, p = filesystem(path)
    with reaching(path, "read"):
        return fs.exists(p)


def isdir(path: Location) -> bool:
    fs, p = filesystem(path)
    with reaching(path, "read"):
        return fs.isdir(p)


def isfile(path: Location) -> bool:
    fs, p = filesystem(path)
    with reaching(path, "read"):
        return fs.isfile(p)


def size(path: Location) -> int | None:
    """Bytes of a file, None when there is none."""
    fs, p = filesystem(path)
    with reaching(path, "read"):
        try:
            return int(fs.size(p))
        except FileNotFoundError:
            return None


def listdir(path: Location) -> list[str]:
    """Names of the entries of a folder (files and sub-folders), sorted; [] when there is none."""
    fs, p = filesystem(path)
    with reaching(path, "list"):
        try:
            entries = fs.ls(p, detail=False)
        except (FileNotFoundError, NotADirectoryError) as e:
            if is_url(path) and is_store_error(e):
                raise  # no bucket: StorageError
            return []
    return sorted({name(e) for e in entries if e.rstrip("/") != p.rstrip("/")})


def glob(pattern: Location) -> list[Location]:
    """Paths (``str``) or URLs matching a glob pattern, sorted."""
    import glob as globlib

    if not is_url(pattern):
        return sorted(globlib.glob(os.path.expanduser(str(pattern))))
    fs, p = filesystem(pattern)
    with reaching(pattern, "list"):
        found = fs.glob(p) if any(c in p for c in "*?[") else ([p] if fs.exists(p) else [])
    if not found:
        check_bucket(pattern)
    return sorted(fs.unstrip_protocol(f) for f in found)


def file_sizes(folder: Location) -> dict[str, int]:
    """Every file below ``folder`` (relative path -> bytes), in one listing."""
    fs, p = filesystem(folder)
    with reaching(folder, "list"):
        try:
            found = fs.find(p, detail=True)
        except FileNotFoundError as e:
            if is_url(folder) and is_store_error(e):
                raise  # no bucket: StorageError
            return {}
    root = p.rstrip("/") + "/"
    # keys ending in "/" are folder markers (pyarrow writes them for Ray's checkpoints), not files
    return {k[len(root):]: int(v.get("size") or 0) for k, v in found.items()
            if k.startswith(root) and not k.endswith("/") and v.get("type") != "directory"}


def read_bytes(path: Location) -> bytes:
    if not is_url(path):
        return Path(path).expanduser().read_bytes()
    fs, p = filesystem(path)
    with reaching(path, "read"):
        return fs.cat_file(p)


def read_text(path: Location) -> str:
    return read_bytes(path).decode()


def open_read(path: Location) -> IO[bytes]:
    """A binary read stream of a file; a URL's retries transient failures (``RetryingReader``)."""
    if not is_url(path):
        return open(Path(path).expanduser(), "rb")
    return RetryingReader(str(path))


class RetryingReader:
    """A forward read stream of one object that reopens it at the byte it had reached when a
    read fails for a transient reason, ``READ_ATTEMPTS`` times at most (the client retries each
    request too; this also covers what it gives up on, such as a connection dropped mid-body)."""

    def __init__(self, url: str):
        self.url, self.pos, self.closed = url, 0, False
        self._f = self._open()

    def _open(self):
        fs, p = filesystem(self.url)
        with reaching(self.url, "read"):
            f = fs.open(p, "rb", block_size=READ_BLOCK, cache_type="readahead")
        f.seek(self.pos)
        return f

    def read(self, n: int = -1) -> bytes:
        for attempt in range(READ_ATTEMPTS):
            try:
                data = self._f.read(n)
                self.pos += len(data)
                return data
            except Exception as e:  # noqa: BLE001 - sorted by transient() below
                if not transient(e) or attempt == READ_ATTEMPTS - 1:
                    if is_store_error(e):
                        raise storage_error(self.url, f"read (at byte {self.pos})", e) from e
                    raise
                wait = 0.5 * 2 ** attempt
                log.warning("reading %s at byte %d failed (%s: %s); retrying in %.1f s", self.url, self.pos,
                            type(e).__name__, e, wait)
                time.sleep(wait)
                with contextlib.suppress(Exception):
                    self._f.close()
                self._f = self._open()
        raise AssertionError("unreachable")

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RetryingReader({self.url!r} at byte {self.pos})"


def transient(e: BaseException) -> bool:
    """A failure that another try may not meet: a dropped or timed-out connection, a server
    error; not a missing object, a refused key or a missing bucket."""
    if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, StorageError)):
        return False
    if isinstance(e, (ConnectionError, TimeoutError, EOFError)) or type(e) is OSError:
        return True
    name_ = type(e).__name__
    return type(e).__module__.split(".")[0] in CLIENT_MODULES and not any(
        k in name_ for k in ("Credential", "NoSuchBucket", "AccessDenied", "ParamValidation"))


# -- writing -------------------------------------------------------------------------------------

def makedirs(path: Location) -> None:
    """A local folder (and its parents); nothing for a URL (an object store has no folders)."""
    if not is_url(path):
        Path(path).expanduser().mkdir(parents=True, exist_ok=True)


def write_bytes(path: Location, data: bytes) -> None:
    """Whole or not at all: locally ``<file>.tmp``, fsync, rename; a URL in one PUT."""
    if is_url(path):
        fs, p = filesystem(path)
        with reaching(path, "write"):
            fs.pipe_file(p, data)
        return
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_text(path: Location, text: str) -> None:
    write_bytes(path, text.encode())


def remove(path: Location) -> None:
    """Delete a file (a missing one is fine)."""
    if not is_url(path):
        Path(path).expanduser().unlink(missing_ok=True)
        return
    fs, p = filesystem(path)
    with reaching(path, "delete"), contextlib.suppress(FileNotFoundError):
        fs.rm_file(p)


def put_file(local: Location, path: Location) -> None:
    """Copy a local file to ``path`` (a URL: one upload, which appears whole when done)."""
    if not is_url(path):
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, Path(path).expanduser())
        return
    fs, p = filesystem(path)
    with reaching(path, "write"):
        fs.put_file(str(local), p)


def put_dir(local: Location, path: Location) -> None:
    """Copy a local folder's files to ``path``, keeping their relative paths."""
    for f in sorted(Path(local).rglob("*")):
        if f.is_file():
            put_file(f, join(path, *f.relative_to(local).parts))


def get_dir(path: Location, local: Location) -> Path:
    """Copy the files below ``path`` into the local folder ``local``; returns it."""
    fs, p = filesystem(path)
    local = Path(local)
    for rel in file_sizes(path):
        (local / rel).parent.mkdir(parents=True, exist_ok=True)
        with reaching(path, "read"):
            fs.get_file(f"{p.rstrip('/')}/{rel}", str(local / rel))
    return local


@contextlib.contextmanager
def local_dir(path: Location) -> Iterator[Path]:
    """A folder a local reader (safetensors, transformers) can open: the folder itself, or for a
    URL a temporary copy, deleted on exit. ``FileNotFoundError`` when it holds no file."""
    if not is_url(path):
        yield Path(path).expanduser()
        return
    with tempfile.TemporaryDirectory(prefix="fovea-copy-") as tmp:
        if not get_dir(path, tmp).exists() or not any(Path(tmp).iterdir()):
            check_bucket(path)
            raise FileNotFoundError(f"{path}: no such folder (no object below it)")
        log.info("copied %s to %s", path, tmp)
        yield Path(tmp)


def local_file(path: Location, folder: Location | None = None) -> Path:
    """A local copy of a file: the file itself, or for a URL a copy in ``folder`` (a new
    temporary folder, which the caller keeps)."""
    if not is_url(path):
        return Path(path).expanduser()
    dst = Path(folder or tempfile.mkdtemp(prefix="fovea-copy-")) / name(path)
    dst.write_bytes(read_bytes(path))
    return dst


class AppendLog:
    """A text file that grows a line at a time (``metrics.jsonl``). Locally each line is
    appended at once; an object cannot be appended to, so for a URL the lines go to a local
    copy (started from the object as it is) that ``sync()`` uploads whole."""

    def __init__(self, path: Location):
        self.path = location(path)
        self._local: Path | None = None
        if is_url(self.path):
            self._local = Path(tempfile.mkdtemp(prefix="fovea-log-")) / name(self.path)
            try:
                self._local.write_bytes(read_bytes(self.path))
            except FileNotFoundError:
                self._local.write_bytes(b"")

    def write_line(self, line: str) -> None:
        target = self._local or Path(self.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a") as f:
            f.write(line.rstrip("\n") + "\n")

    def sync(self) -> None:
        if self._local is not None:
            put_file(self._local, self.path)
