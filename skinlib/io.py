"""Atomic file writes: a result is either complete on disk or absent."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _pid_of(name: str) -> int | None:
    """The writer's pid in a temporary's name (``.<target>.<pid>.tmp``), if it carries one."""
    parts = name.split(".")
    return int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else None


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


STALE_TMP_SECONDS = 24 * 3600.0
_UMASK = os.umask(0)
os.umask(_UMASK)


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete hidden ``.*.tmp`` files in ``folder`` left by killed writers.

    A temporary whose name carries a pid is stale when that process is gone; any
    other is stale after ``STALE_TMP_SECONDS``. Returns what was removed.
    """
    removed = []
    now = time.time()
    for path in Path(folder).glob(".*.tmp"):
        pid = _pid_of(path.name)
        try:
            stale = not pid_alive(pid) if pid is not None else now - path.stat().st_mtime > STALE_TMP_SECONDS
            if stale:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:
            continue
    if removed:
        log.info("removed %d temporary file(s) left by killed processes in %s", len(removed), folder)
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".{os.getpid()}.tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; a shared run store must stay readable
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


class NoSpaceError(OSError):
    """Not enough free disk space for what is about to be written; the message says how much, where and which
    setting moves it."""


def check_free_space(folder: str | os.PathLike, needed: int, *, what: str, setting: str) -> None:
    """Raise :class:`NoSpaceError` when ``folder``'s disk has fewer than ``needed`` bytes free (plus a margin)."""
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    margin = 64 * 1024 * 1024
    if needed + margin > free:
        raise NoSpaceError(f"{what} needs {_size(needed)} in {folder}, but only {_size(free)} are free there; "
                           f"free some space or point {setting} at a disk with room")


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} TB"


def reserve(fd: int, size: int, *, path: Path, what: str, setting: str) -> None:
    """Allocate ``size`` bytes of the open file ``fd`` on disk now, so writing through a memory map later cannot
    fail with SIGBUS on a full disk; ``NoSpaceError`` when they are not there."""
    if not hasattr(os, "posix_fallocate"):
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NoSpaceError(f"{what} needs {_size(size)} in {path.parent}, which the disk cannot give "
                               f"({exc.strerror}); free some space or point {setting} at a disk with room") from None
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):  # file systems without fallocate
            raise


def make_shareable(folder: str | os.PathLike) -> Path:
    """Give a folder made by ``tempfile.mkdtemp`` (mode 0700) the mode the umask gives any new folder."""
    os.chmod(folder, 0o777 & ~_UMASK)
    return Path(folder)


def replace_dir(staging: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Put the finished folder ``staging`` at ``final``: an older ``final`` is moved aside first and removed
    after, so at every moment ``final`` is either the old folder or the new one, never a mix."""
    staging, final = Path(staging), Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest (``hashlib`` algorithm name) of a file, read in 1 MiB blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def temporary_env(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of a ``with`` block, then restore each one (or remove it)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


class FileLock:
    """An exclusive lock between processes, e.g. on one run, so that two processes never train it at once
    (``what`` names the locked thing in messages).

    On POSIX systems the lock is an ``fcntl.flock`` on ``<runs>/.locks/<run>.lock``: the kernel
    releases it when its holder exits or is killed, so a lock left behind by a dead
    process is stale by construction and is taken over at once (logged with the dead
    holder's pid, which the file records). A second process waits, polling, until the
    holder releases it, then sees the finished run and reuses it, or resumes it.
    Where ``fcntl`` is missing (Windows), an exclusive-create lock file is used and a
    holder whose pid is gone on this host, or whose heartbeat is older than
    ``STALE_AFTER`` seconds, is stale.
    """

    STALE_AFTER = 6 * 3600.0

    def __init__(self, path: Path, *, poll: float = 2.0, timeout: float | None = None, what: str = "lock") -> None:
        self.path, self.poll, self.timeout, self.what = Path(path), poll, timeout, what
        self._fd: int | None = None

    def _describe_holder(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, json.JSONDecodeError):
            return {}

    def _stamp(self) -> bytes:
        return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode()

    def _try_posix(self) -> bool:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        previous = os.read(fd, 4096)
        if previous.strip():
            try:
                holder = json.loads(previous)
                log.warning("taking over the lock of %s left by pid %s on %s (that process is gone)",
                            self.path.stem, holder.get("pid"), holder.get("host"))
            except json.JSONDecodeError:
                log.warning("taking over a stale lock on %s", self.path.stem)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, self._stamp())
        self._fd = fd
        return True

    def _stale(self) -> bool:
        holder = self._describe_holder()
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return False
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            return not pid_alive(holder["pid"])
        return age > self.STALE_AFTER

    def _try_exclusive_create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if self._stale():
                log.warning("taking over the stale lock of %s (%s)", self.path.stem, self._describe_holder())
                self.path.unlink(missing_ok=True)
            return False
        os.write(fd, self._stamp())
        self._fd = fd
        return True

    def acquire(self) -> FileLock:
        """Take the lock, waiting while another live process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try_once = self._try_posix if _HAVE_FCNTL else self._try_exclusive_create
        start = time.monotonic()
        told = False
        while not try_once():
            if not told:
                holder = self._describe_holder()
                log.info("%s %s is held by pid %s on %s; waiting for it", self.what, self.path.stem,
                         holder.get("pid", "?"), holder.get("host", "?"))
                told = True
            if self.timeout is not None and time.monotonic() - start > self.timeout:
                raise TimeoutError(f"{self.what} {self.path.stem} stayed locked by another process for "
                                   f"{self.timeout:.0f} s ({self.path})")
            time.sleep(self.poll)
        return self

    def heartbeat(self) -> None:
        """Refresh the lock's age (a long run's lock is never mistaken for a stale one)."""
        if self._fd is not None:
            os.utime(self.path)

    def release(self) -> None:
        if self._fd is None:
            return
        if not _HAVE_FCNTL:
            self.path.unlink(missing_ok=True)
        else:
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = None

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


try:
    import fcntl  # noqa: F401

    _HAVE_FCNTL = True
except ImportError:  # Windows
    _HAVE_FCNTL = False
