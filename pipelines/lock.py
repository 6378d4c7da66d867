"""One run at a time per output folder: out/.lock, with a heartbeat, taken
over when its process is gone or its heartbeat stopped.

On the local disk the lock is created exclusively (O_EXCL). An object store
has no exclusive create: there the lock is looked up, then written, and the
heartbeat rewrites it, so two runs started within the same second could
both take it (docs/design.md); a run started later sees the first one's."""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

from attninf.errors import AttninfError
from attninf.storage import utc_now
from attninf.stores import RemotePath, location

LOCK = ".lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """out/.lock while a run writes into out: a second run on the same --out
    (a job launched twice) is refused with the first one's host, pid and
    start time. A lock whose process is gone (same host), or whose heartbeat
    stopped (another host), is taken over."""

    HEARTBEAT_S = 10.0
    STALE_S = 60.0

    def __init__(self, out: str | Path):
        self.path = location(out) / LOCK
        self.remote = isinstance(self.path, RemotePath)
        self.me = {"host": socket.gethostname(), "pid": os.getpid(),
                   "started": utc_now()}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _stale(self, other: dict) -> bool:
        if other.get("host") == self.me["host"]:
            return not _alive(int(other.get("pid", -1)))
        try:
            return time.time() - self.path.stat().st_mtime > self.STALE_S
        except FileNotFoundError:
            return True

    def acquire(self) -> str | None:
        """Take the lock; returns a note when a stale lock was taken over."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        note = None
        for _ in range(2):
            try:
                fd = self._create()
            except FileExistsError:
                try:
                    other = json.loads(self.path.read_text() or "{}")
                except (ValueError, OSError):
                    other = {}
                if other and not self._stale(other):
                    raise AttninfError(f"{self.path.parent} is being written by another `attninf score` "
                                       f"(host {other.get('host')}, pid {other.get('pid')}, started "
                                       f"{other.get('started')}); wait for it, or use another --out") from None
                note = (f"took over the lock of a run that is gone (host {other.get('host')}, "
                        f"pid {other.get('pid')}, started {other.get('started')})")
                self.path.unlink(missing_ok=True)
                continue
            if fd is not None:
                with os.fdopen(fd, "w") as f:
                    json.dump(self.me, f)
            self._thread = threading.Thread(target=self._beat, daemon=True)
            self._thread.start()
            return note
        raise AttninfError(f"could not take the lock {self.path}")

    def _create(self) -> int | None:
        """The lock made ours: a local file created exclusively (its descriptor
        returned to write into), or a remote one looked up, then written."""
        if not self.remote:
            return os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        if self.path.exists():
            raise FileExistsError(str(self.path))
        self.path.write_text(json.dumps(self.me))
        return None

    def _beat(self) -> None:
        while not self._stop.wait(self.HEARTBEAT_S):
            try:
                if self.remote:
                    self.path.write_text(json.dumps(self.me))  # a new modification time
                else:
                    os.utime(self.path)
            except Exception:  # noqa: BLE001 - a lost heartbeat only lets a later run take over
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.HEARTBEAT_S)
        try:
            if json.loads(self.path.read_text()).get("pid") == self.me["pid"]:
                self.path.unlink()
        except Exception:  # noqa: BLE001 - gone already, or the store is unreachable: nothing to undo
            pass

    def __enter__(self) -> "RunLock":
        """`with RunLock(out) as lock:` holds the lock for the block;
        lock.note says whether a stale one was taken over."""
        self.note = self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
