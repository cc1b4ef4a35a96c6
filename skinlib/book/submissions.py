"""Collecting coursework: one notebook per student from a learning platform's download, checked as hostile input.

Every file is read by what it is (a regular file of bounded size that parses as a notebook with the chapter's
answer cells), never by what it claims; links, pipes and devices are reported, not followed or opened. A
student's name comes from their folder (or file) and stays readable in any script; two different names never
merge into one, and nothing is written outside the output folder.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from skinlib.book.grading import GradingError, answers
from skinlib.book.notebooks import chapter_source
from skinlib.io import atomic_write_text

log = logging.getLogger(__name__)

MAX_SUBMISSION_BYTES = 20 * 2**20
MAX_NAME = 60  # characters of a student's file name, before the hash that keeps long names apart


@dataclass
class Collected:
    students: dict[str, Path]  # file-safe name -> the collected copy
    rejected: dict[str, str]  # path relative to the source -> why
    names: dict[str, str]  # file-safe name -> the name as the download spells it


def safe_name(name: str) -> str:
    """A student's name as a file name: letters of any script, digits, ``.``, ``_`` and ``-`` kept (NFC), every
    other run of characters ``_``; a name that had to change, or is long, ends in a short hash of the original,
    so ``Ann Lee`` and ``Ann_Lee`` stay two students."""
    name = unicodedata.normalize("NFC", name)
    cleaned = re.sub(r"[^\w.-]+", "_", name, flags=re.UNICODE).strip("._") or "student"
    if cleaned == name and len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned[:MAX_NAME]}-{digest}"


def _student_of(rel: Path) -> str:
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _candidates(src: Path, found: Collected) -> list[Path]:
    """Every ``*.ipynb`` under ``src`` (relative paths), walking no link; links, pipes and other non-files named
    like a notebook are rejected with the reason, linked folders too."""
    out = []
    for folder, dirs, files in os.walk(src, followlinks=False):
        here = Path(folder)
        for d in list(dirs):
            if (here / d).is_symlink():
                found.rejected[str((here / d).relative_to(src))] = "a linked folder (copy the folder itself)"
                dirs.remove(d)
            elif d == ".ipynb_checkpoints":
                dirs.remove(d)
        for name in files:
            if not name.endswith(".ipynb"):
                continue
            path = here / name
            rel = path.relative_to(src)
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                found.rejected[str(rel)] = "a link (copy the file itself)"
            elif not stat.S_ISREG(mode):
                found.rejected[str(rel)] = "not a regular file (a pipe, socket or device)"
            else:
                out.append(rel)
    return sorted(out)


def _read(path: Path) -> str:
    """A regular file's text, at most :data:`MAX_SUBMISSION_BYTES` (never blocks: no pipes reach here)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise OSError("not a regular file")
        data = fh.read(MAX_SUBMISSION_BYTES + 1)
    if len(data) > MAX_SUBMISSION_BYTES:
        raise ValueError(f"larger than {MAX_SUBMISSION_BYTES // 2**20} MB")
    return data.decode("utf-8")


def collect(source: str | os.PathLike, out: str | os.PathLike, *, chapter: str,
            root: str | os.PathLike | None = None) -> Collected:
    """Copy one submission of ``chapter`` per student from ``source`` (``<student>/<any>.ipynb`` or
    ``<student>.ipynb``) into ``out/<student>.ipynb``. A file that is a link, too large, not a notebook, or
    has none of the chapter's answer cells is rejected with the reason; nothing is written outside ``out``,
    which may not lie inside ``source`` (a second collection would collect the first)."""
    import nbformat


    src, dest = Path(source), Path(out)
    if not src.is_dir():
        raise GradingError(f"submissions folder {src} does not exist")
    if _inside(dest.resolve(), src.resolve()) or _inside(src.resolve(), dest.resolve()):
        raise GradingError(f"--out {dest} lies inside the submissions folder {src} (or contains it): a second "
                           f"collection would collect the first; choose a folder beside it")
    expected = set(answers(nbformat.read(chapter_source(chapter, root), as_version=4)))
    if not expected:
        raise GradingError(f"chapter {chapter} has no answer cells to grade")
    found = Collected({}, {}, {})
    origin: dict[str, str] = {}  # safe name -> the original name it was made from
    for rel in _candidates(src, found):
        try:
            nb = nbformat.reads(_read(src / rel), as_version=4)
        except ValueError as exc:
            found.rejected[str(rel)] = str(exc) if "larger than" in str(exc) else \
                f"not a readable notebook ({type(exc).__name__})"
            continue
        except Exception as exc:  # any unreadable file is the student's, not ours
            found.rejected[str(rel)] = f"not a readable notebook ({type(exc).__name__})"
            continue
        if not set(answers(nb)) & expected:
            found.rejected[str(rel)] = f"none of {chapter}'s answer cells ({', '.join(sorted(expected))})"
            continue
        original = _student_of(rel)
        name = safe_name(original)
        if name in origin:
            found.rejected[str(rel)] = f"a second submission of {original} (kept {found.students[name].name})"
            continue
        origin[name] = original
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / f"{name}.ipynb"
        atomic_write_text(target, nbformat.writes(nb))
        found.students[name], found.names[name] = target, original
    log.info("collected %d submissions of %s, rejected %d", len(found.students), chapter, len(found.rejected))
    return found
