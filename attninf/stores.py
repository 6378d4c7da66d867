"""Where attninf's inputs and outputs live: a local path, or a URL of any
fsspec store (s3://, gs://, az://, hf://, memory://, ...; file:// is a local
path). `location(x)` gives a pathlib.Path for a local one and a RemotePath,
with the few pathlib methods attninf uses, for a URL, so a stage reads the
same either way. Credentials and endpoints come from where the store's own
library looks (for S3: AWS_* variables, ~/.aws, FSSPEC_S3_* settings).

Object stores have no rename: a file written there appears whole when its
upload completes (one PUT or one completed multipart upload). So
storage.atomic_path writes a remote file under a local temporary name and
uploads it at the end, and a whole output folder is complete when its
manifest, uploaded last, is there (docs/design.md).
"""
from __future__ import annotations

import fnmatch
import os
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from .errors import AttninfError, one_line


def is_url(x) -> bool:
    """A URL of a store other than the local disk (file:// is local)."""
    s = str(x)
    return "://" in s and not s.startswith("file://")


def location(x: str | os.PathLike) -> "Path | RemotePath":
    if isinstance(x, RemotePath):
        return x
    s = os.fspath(x)
    if s.startswith("file://"):
        return Path(s[len("file://"):])
    return RemotePath(s) if is_url(s) else Path(s)


OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oci", "oss", "r2"}


class Stat(NamedTuple):
    st_size: int
    st_mtime: float
    version: str  # the store's version of the object (ETag, generation), "" when it has none


def _store(url: str):
    from fsspec.core import url_to_fs

    try:
        # listings are not cached: other processes (workers, a resumed run) write the same prefix
        return url_to_fs(url, use_listings_cache=False)
    except (ImportError, ValueError) as e:
        raise AttninfError(f"{url}: {one_line(e)}") from e


def store_error(url, e: Exception) -> AttninfError:
    """One line for a store that cannot be reached or refuses us."""
    name = type(e).__name__
    text = one_line(e)
    if "NoCredentials" in name or "credentials" in text.lower() and "locate" in text.lower():
        return AttninfError(f"{url}: no credentials for this store (for S3: AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY, a profile in ~/.aws, or an instance role)")
    if isinstance(e, PermissionError) or "AccessDenied" in text or "Forbidden" in text:
        return AttninfError(f"{url}: access denied ({text})")
    return AttninfError(f"{url}: cannot reach the store ({text})")


class RemotePath:
    """A file or folder at a URL of an fsspec store; a pure path plus the
    store. Its methods have pathlib's names and meanings, so stage code
    treats it like a Path; it has no __fspath__, so nothing opens it with
    the local os by mistake."""

    def __init__(self, url: str, fs=None, path: str | None = None):
        self.url = url.rstrip("/") if not url.endswith("://") else url
        if fs is None:
            fs, path = _store(self.url)
        self.fs, self.path = fs, (path if path is not None else fs._strip_protocol(self.url)).rstrip("/")

    # ---- pure path
    def __truediv__(self, other) -> "RemotePath":
        other = str(other).strip("/")
        return RemotePath(f"{self.url}/{other}", self.fs, f"{self.path}/{other}")

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    @property
    def stem(self) -> str:
        return PurePosixPath(self.path).stem

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.path).suffix

    @property
    def parent(self) -> "RemotePath":
        head = self.url.rsplit("/", 1)[0]
        return RemotePath(head, self.fs, str(PurePosixPath(self.path).parent))

    def with_name(self, name: str) -> "RemotePath":
        return self.parent / name

    def relative_to(self, other: "RemotePath") -> PurePosixPath:
        return PurePosixPath(self.path).relative_to(PurePosixPath(other.path))

    def resolve(self) -> "RemotePath":
        return self

    @property
    def parents(self) -> list["RemotePath"]:
        out, p = [], self
        while "/" in p.path:
            p = p.parent
            out.append(p)
        return out

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"RemotePath({self.url!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, RemotePath) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def __lt__(self, other) -> bool:
        return self.url < other.url

    # ---- the store
    def _call(self, fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError, AttninfError):
            raise
        except Exception as e:  # noqa: BLE001 - the store's own errors, made one line
            raise store_error(self.url, e) from e

    def exists(self) -> bool:
        return self._call(self.fs.exists, self.path)

    def is_file(self) -> bool:
        return self._call(self.fs.isfile, self.path)

    def is_dir(self) -> bool:
        return self._call(self.fs.isdir, self.path)

    def stat(self) -> Stat:
        info = self._call(self.fs.info, self.path)
        mtime = info.get("LastModified") or info.get("mtime") or info.get("created") or 0
        if hasattr(mtime, "timestamp"):
            mtime = mtime.timestamp()
        version = str(info.get("ETag") or info.get("etag") or info.get("generation") or "").strip('"')
        return Stat(int(info.get("size") or 0), float(mtime), version)

    def open(self, mode: str = "rb", **kw):
        return self._call(self.fs.open, self.path, mode, **kw)

    def read_bytes(self) -> bytes:
        return self._call(self.fs.cat_file, self.path)

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> None:
        self._call(self.fs.pipe_file, self.path, data)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self._call(self.fs.rm_file, self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing on an object store (folders are key prefixes; s3fs would
        create a missing bucket), the store's makedirs elsewhere."""
        protocols = {self.fs.protocol} if isinstance(self.fs.protocol, str) else set(self.fs.protocol)
        if not protocols & OBJECT_STORES:
            self._call(self.fs.makedirs, self.path, exist_ok=True)

    def files(self) -> list["RemotePath"]:
        """Every file under this folder, at any depth."""
        try:
            found = self._call(self.fs.find, self.path)
        except FileNotFoundError:
            return []
        return [RemotePath(f"{self.url}/{f[len(self.path):].lstrip('/')}", self.fs, f) for f in found]

    def rglob(self, pattern: str) -> list["RemotePath"]:
        return [p for p in self.files() if fnmatch.fnmatch(p.name, pattern)]

    def glob(self, pattern: str) -> list["RemotePath"]:
        return [p for p in self.files() if "/" not in str(p.relative_to(self)) and fnmatch.fnmatch(p.name, pattern)]

    def iterdir(self) -> list["RemotePath"]:
        try:
            found = self._call(self.fs.ls, self.path, detail=False)
        except FileNotFoundError:
            return []
        return [self / f.rstrip("/").rsplit("/", 1)[-1] for f in found if f.rstrip("/") != self.path]

    def rmtree(self) -> None:
        try:
            self._call(self.fs.rm, self.path, recursive=True)
        except FileNotFoundError:
            pass

    def upload(self, local: Path) -> None:
        """A local file put here whole (the object appears when the upload completes)."""
        self._call(self.fs.put_file, str(local), self.path)


def rmtree(p) -> None:
    """shutil.rmtree(ignore_errors=True) for a local or remote folder."""
    if isinstance(p, RemotePath):
        p.rmtree()
    else:
        import shutil

        shutil.rmtree(p, ignore_errors=True)


def readable(p):
    """What pyarrow and the decompressors open: a local path's str, or a
    remote file opened for reading (random access through range requests)."""
    return p.open("rb") if isinstance(p, RemotePath) else str(p)


def all_files(root) -> list[str]:
    """Relative posix paths of every file under root (local or remote), sorted."""
    if isinstance(root, RemotePath):
        return sorted(str(p.relative_to(root)) for p in root.files())
    return sorted(p.relative_to(root).as_posix() for p in Path(root).rglob("*") if p.is_file())


def absolute(x) -> str:
    """How a manifest records a location: a URL as it is, a local path resolved."""
    loc = location(x)
    return str(loc) if isinstance(loc, RemotePath) else str(loc.resolve())
