"""A student's kernel out of reach of the teacher's files: Linux namespaces around the grading kernel.

``skinlib grade run`` starts each student's kernel through this module's kernel spec. The kernel runs in new user,
mount and PID namespaces (``unshare``, no privileges needed where the system allows unprivileged user namespaces):
before the kernel starts, an empty read-only file system is mounted over every folder the student must not read
(the teacher's chapters, the project's history and built pages, the submissions and the grades), and the process
sees only its own processes (a fresh ``/proc``: no path into the grader's view through ``/proc/PID/root``). It
still runs with the teacher's user id for everything else, so a container remains the stronger isolation
(``book/teachers.md``)."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

KERNEL = "skinlib-sandbox"
UNSHARE = ("unshare", "--user", "--map-root-user", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc")
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_BIND = 1, 2, 4, 4096


def unavailable() -> str | None:
    """Why namespaces cannot isolate a kernel here (``None`` when they can): no ``unshare``, or the system
    refuses unprivileged user namespaces."""
    if shutil.which("unshare") is None:
        return "the unshare command (util-linux) is not installed"
    try:
        done = subprocess.run([*UNSHARE, sys.executable, "-c", "pass"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare did not start ({exc})"
    if done.returncode != 0:
        return f"unshare refused: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}"
    return None


def write_kernel_spec(folder: Path, hidden: list[Path]) -> str:
    """A kernel spec under ``folder/kernels`` (put ``folder`` on ``JUPYTER_PATH``) whose kernel starts inside
    the namespaces with ``hidden`` (folders or files) out of sight; returns its name."""
    spec = folder / "kernels" / KERNEL
    spec.mkdir(parents=True, exist_ok=True)
    argv = [*UNSHARE, sys.executable, "-m", "skinlib.book.sandbox",
            *[str(p.resolve()) for p in hidden], "--", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "skinlib sandbox",
                                                  "language": "python"}), encoding="utf-8")
    return KERNEL


def _mount(source: bytes, target: str, kind: bytes | None, flags: int, options: bytes | None) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.mount(source, target.encode(), kind, flags, options) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"cannot hide {target}: {os.strerror(error)}")


def hide(path: str) -> None:
    """An empty read-only folder over a folder, ``/dev/null`` over a file; nothing for a path that is absent."""
    if os.path.isdir(path):
        _mount(b"tmpfs", path, b"tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, b"size=4k,mode=0555")
    elif os.path.exists(path):
        _mount(b"/dev/null", path, None, MS_BIND, None)


def main(argv: list[str]) -> None:
    """Inside the namespaces: hide the paths before ``--``, then become the kernel with the arguments after it.
    A path that cannot be hidden stops here, before any student code runs."""
    cut = argv.index("--")
    for path in argv[:cut]:
        hide(path)
    os.execv(sys.executable, [sys.executable, "-m", "ipykernel_launcher", *argv[cut + 1:]])


if __name__ == "__main__":
    main(sys.argv[1:])
