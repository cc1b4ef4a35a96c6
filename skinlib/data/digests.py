"""Content digests of data files, computed once per file and remembered.

The data fingerprint (:mod:`skinlib.data.selection`) must change when an image's bytes
change, even when its size does not. Hashing all 10,015 images on every call would
slow every chapter down, so each file's SHA-256 is remembered in the cache folder,
keyed by the file's absolute path, byte size, modification time and inode: a file that
is rewritten, replaced or touched is hashed again, an unchanged one is not.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from skinlib.data.cache import cache_folder
from skinlib.io import atomic_write_json, file_digest

log = logging.getLogger(__name__)

MEMO_NAME = "file-digests-v1.json"
# memo contents per memo file: (mtime_ns of the memo when read, {path: [size, mtime_ns, inode, sha256]})
_LOADED: dict[Path, tuple[int, dict[str, list]]] = {}


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _read_memo(memo: Path) -> dict[str, list]:
    try:
        mtime = memo.stat().st_mtime_ns
    except FileNotFoundError:
        return {}
    cached = _LOADED.get(memo)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    try:
        entries = json.loads(memo.read_text())
        if not isinstance(entries, dict):
            raise ValueError("not a mapping")
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        log.warning("ignoring the damaged digest memo %s (%s); the images are hashed again", memo, exc)
        return {}
    _LOADED[memo] = (mtime, entries)
    return entries


def content_digests(paths: Sequence[str | os.PathLike], *, cache_dir: str | os.PathLike | None = None,
                    workers: int | None = None) -> list[str]:
    """The SHA-256 of each file in ``paths`` (in order), hashing only files not seen unchanged before."""

    folder = cache_folder(cache_dir)
    memo = folder / MEMO_NAME
    known = _read_memo(memo)
    keys = [os.path.abspath(p) for p in paths]
    stamps = [_stamp(os.stat(k)) for k in keys]
    out: list[str | None] = []
    todo = []
    for i, (key, stamp) in enumerate(zip(keys, stamps)):
        hit = known.get(key)
        if isinstance(hit, list) and len(hit) == 4 and hit[:3] == stamp:
            out.append(hit[3])
        else:
            out.append(None)
            todo.append(i)
    if todo:
        log.info("hashing %d of %d data files (the rest are remembered in %s)", len(todo), len(keys), memo)
        with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
            found = list(pool.map(lambda i: file_digest(keys[i]), todo))
        updated = dict(_read_memo(memo))  # another process may have added files meanwhile
        for i, digest in zip(todo, found):
            out[i] = digest
            updated[keys[i]] = [*stamps[i], digest]
        try:
            atomic_write_json(memo, updated)
            _LOADED[memo] = (memo.stat().st_mtime_ns, updated)
        except OSError as exc:  # a read-only cache folder only costs the memo
            log.warning("cannot remember the data files' digests in %s: %s (set SKINLIB_CACHE_DIR to a writable "
                        "folder)", memo, exc)
    return [d for d in out if d is not None]
