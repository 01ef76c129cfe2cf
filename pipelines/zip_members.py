"""Videos inside zip archives, read where they lie: no archive is ever extracted.

Upstream video sets ship their clips in zip files (OpenVid-1M ``OpenVid_partN.zip``, Vript
``clips_N_of_1095.zip``, ShareGPT4Video ``zip_folder/<source>/*.zip``).  OpenVid splits its
archives over 50 GB into byte pieces ``OpenVid_partN_partaa``, ``_partab`` that its card says to
join (``cat OpenVid_part73_part* > OpenVid_part73.zip``); ``JoinedFile`` reads the pieces as the
one archive they make, so they need not be joined on disk (a whole ``<name>.zip`` beside its
pieces is read instead of them).

``VideoIndex`` (the driver, while planning) lists every archive's members from its central
directory, and the plain video files beside them (the extracted layouts), by file name.  A
reference names the archive's pieces and the member (``ZipMember``: small JSON, never the
bytes); the Ray task that decodes it opens the member itself (``open_member``).
"""

from __future__ import annotations

import bisect
import contextlib
import io
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from fovea.pipelines.errors import MISSING_FILE, UNREADABLE_VIDEO, Reject

VIDEO_EXTS = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v")
PIECE = re.compile(r"^(?P<archive>.+)_part(?P<piece>[a-z]{2})$")  # OpenVid_part73_partaa
SPOOL_BYTES = 64 << 20  # a member larger than this is copied to a temporary file, not memory


@dataclass(frozen=True)
class ZipMember:
    """A video inside a zip archive: the archive's pieces in order (one path for a whole .zip)
    and the member's name."""

    parts: tuple[str, ...]
    name: str

    def __str__(self) -> str:
        return f"{'+'.join(Path(p).name for p in self.parts)}:{self.name}"


def fingerprint(path: str | Path) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


class JoinedFile(io.RawIOBase):
    """Files read one after another as one seekable file (the byte pieces of a split archive)."""

    def __init__(self, paths: list[str] | tuple[str, ...]):
        super().__init__()
        self._files = [open(p, "rb") for p in paths]
        self._starts = [0]
        for f in self._files:
            self._starts.append(self._starts[-1] + os.fstat(f.fileno()).st_size)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._starts[-1]}[whence]
        if base + offset < 0:
            raise OSError(f"seek to {base + offset} before the start")
        self._pos = base + offset
        return self._pos

    def readinto(self, buf) -> int:
        if self._pos >= self._starts[-1]:
            return 0
        i = bisect.bisect_right(self._starts, self._pos) - 1  # the piece holding the position
        f = self._files[i]
        f.seek(self._pos - self._starts[i])
        n = f.readinto(memoryview(buf)[: self._starts[i + 1] - self._pos])
        self._pos += n
        return n

    def close(self) -> None:
        for f in self._files:
            f.close()
        super().close()


@contextlib.contextmanager
def open_archive(parts: tuple[str, ...] | list[str]):
    """``zipfile.ZipFile`` over a whole .zip or over its byte pieces, closed on exit."""
    if len(parts) == 1:
        with zipfile.ZipFile(parts[0]) as zf:
            yield zf
        return
    # buffered: zipfile expects read(n) to return n bytes, and a raw read stops at a piece's end
    with io.BufferedReader(JoinedFile(parts), buffer_size=1 << 20) as f, zipfile.ZipFile(f) as zf:
        yield zf


def find_archives(root: Path) -> list[tuple[str, ...]]:
    """Every archive under ``root``: each ``*.zip``, and each set of ``<name>_partaa``, ``_partab``,
    ... pieces whose joined ``<name>.zip`` is not there too.  Hidden entries are skipped."""
    whole: list[tuple[str, ...]] = []
    pieces: dict[str, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            m = PIECE.match(name)
            if name.lower().endswith(".zip"):
                whole.append((os.path.join(dirpath, name),))
            elif m and "." not in m["archive"]:
                pieces.setdefault(os.path.join(dirpath, m["archive"]), []).append(os.path.join(dirpath, name))
    joined = [tuple(sorted(ps)) for base, ps in sorted(pieces.items()) if not os.path.isfile(base + ".zip")]
    return sorted(whole + joined)


def has_videos(root: Path) -> bool:
    """Whether ``root`` holds any archive, archive piece or video file (stops at the first)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if any(f.lower().endswith((".zip", *VIDEO_EXTS)) or PIECE.match(f) for f in filenames):
            return True
    return False


class VideoIndex:
    """Video file name -> where it lies: a member of an archive under ``root``, or a plain file
    under ``root``.  Built from central directories and one directory walk (no member is read);
    the first of two equal names wins (archives in sorted order, then plain files)."""

    def __init__(self, root: Path):
        self.root = root
        self.archives = find_archives(root)
        self.problems: list[str] = []  # archives whose central directory does not read
        self._where: dict[str, dict] = {}
        for parts in self.archives:
            self._add_archive(parts)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.lower().endswith(VIDEO_EXTS) and not name.startswith("."):
                    path = os.path.join(dirpath, name)
                    self._where.setdefault(name, {"video": path, "fp": fingerprint(path)})

    def _add_archive(self, parts: tuple[str, ...]) -> None:
        try:
            with open_archive(parts) as zf:
                infos = zf.infolist()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            self.problems.append(f"{Path(parts[0]).name} does not open ({type(e).__name__}: {e})")
            return
        fps = [fingerprint(p) for p in parts]
        for info in infos:
            base = info.filename.rsplit("/", 1)[-1]
            if info.is_dir() or not base.lower().endswith(VIDEO_EXTS) or base.startswith("."):
                continue
            self._where.setdefault(base, {"zip": list(parts), "member": info.filename,
                                          "fp": [info.CRC, info.file_size, *fps]})

    def find(self, name: str) -> dict | None:
        """Reference fields for the video ``name`` (``zip`` + ``member``, or ``video``, and ``fp``)."""
        return self._where.get(name)

    def missing(self, name: str) -> str:
        """Why ``name`` was not found, for a ``missing_file`` reject."""
        where = f"{len(self.archives)} archive{'s' if len(self.archives) != 1 else ''}"
        detail = f"{name} is in none of the {where} under {self.root}, nor a file there"
        return detail + (f" ({'; '.join(self.problems[:3])})" if self.problems else "")


def video_source(ref: dict) -> str | ZipMember:
    """What ``video.decode_video`` takes for a reference: a path, or the archive member."""
    if "zip" in ref:
        return ZipMember(tuple(ref["zip"]), ref["member"])
    return ref["video"]


def open_member(member: ZipMember):
    """The member's bytes as a seekable file (in memory up to ``SPOOL_BYTES``, else a temporary
    file); ``Reject`` when the archive or the member is gone, or the member does not read whole.

    PyAV decodes from any seekable file object, but a zip member's own stream (``ZipFile.open``)
    seeks backwards by reading, and inflating, the member again from its start, and the MP4
    demuxer seeks back and forth (the ``moov`` index often sits at the end of the file).  One
    sequential copy makes every seek cheap and checks the member's CRC on the way."""
    gone = [p for p in member.parts if not os.path.isfile(p)]
    if gone:
        raise Reject(MISSING_FILE, f"archive {gone[0]} is gone")
    out = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
    try:
        with open_archive(member.parts) as zf:
            info = zf.getinfo(member.name)
            if info.file_size == 0:
                raise Reject(UNREADABLE_VIDEO, "empty file")
            with zf.open(info) as src:
                shutil.copyfileobj(src, out, 1 << 20)
    except KeyError:
        out.close()
        raise Reject(MISSING_FILE, f"no member {member.name} in {member.parts[0]} any more") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError, zlib.error) as e:
        out.close()  # RuntimeError: an encrypted member; NotImplementedError: a compression zipfile lacks
        raise Reject(UNREADABLE_VIDEO, f"{type(e).__name__} reading {member}: {e}") from None
    except Reject:
        out.close()
        raise
    out.seek(0)
    return out
