"""Results bundles, the format: the folder layout, the files a run may carry, ``bundle.json``'s name and version, the
size limit, where bundles live and which commit made them. Packing (:mod:`.pack`) and unpacking (:mod:`.unpack`)
both read this; neither defines any of it."""

from __future__ import annotations

import logging
import os
import re
import subprocess
from pathlib import Path

from skinlib.data.paths import project_root
from skinlib.runs import DATA_FILE, FILES

log = logging.getLogger(__name__)



BUNDLE_FILE = "bundle.json"
DATA_FOLDER = "data"  # the data summary (snapshot) a bundle carries
FORMAT = 1
MAX_BYTES = 10 * 1024 * 1024  # per profile, committed with the code
PLAIN_FILES = (FILES.config, DATA_FILE, FILES.history, FILES.metrics, FILES.isic_metrics, FILES.onnx_parity)
GZIP_FILES = (FILES.predictions, FILES.isic_predictions, FILES.cam_scores)
BINARY_FILES = (FILES.cam_examples,)



class BundleError(ValueError):
    """A bundle that cannot be used as it is: damaged, incomplete, too large or made on other data."""



def results_root(root: str | os.PathLike | None = None) -> Path:
    """``results/`` in the project (or the working directory)."""
    if root is not None:
        return Path(root)
    base = project_root()
    return (base if base is not None else Path.cwd()) / "results"



def bundle_dir(profile: str, root: str | os.PathLike | None = None) -> Path:
    return results_root(root) / profile



COMMIT_ENV = "SKINLIB_GIT_COMMIT"  # the commit of a copy without .git (a staged GPU window), set by whoever copied it



def git_commit(*, full: bool = False, root: Path | None = None) -> str:
    """The commit this code is from: :data:`COMMIT_ENV` when set, else ``git rev-parse`` in this project's own
    ``.git`` (never a repository above it; or in ``root``'s, a checkout the book is built from), else
    ``"unknown"``; ``-dirty`` when tracked files were changed; the whole hash with ``full``."""
    given = os.environ.get(COMMIT_ENV, "").strip()
    if given:
        return given if re.fullmatch(r"[0-9a-f]{7,40}(-dirty)?", given) else "unknown"
    root = root if root is not None else project_root()
    if root is None or not (root / ".git").exists():
        return "unknown"
    env = {**os.environ, "GIT_DIR": str(root / ".git"), "GIT_WORK_TREE": str(root),
           "GIT_CEILING_DIRECTORIES": str(root.parent)}
    try:
        head = subprocess.run(["git", "rev-parse", *([] if full else ["--short"]), "HEAD"], cwd=root,
                              capture_output=True, text=True, timeout=10, env=env)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=20, env=env)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = head.stdout.strip()
    if head.returncode or not re.fullmatch(r"[0-9a-f]{7,40}", commit):
        return "unknown"
    return commit + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")



RUN_FILES = frozenset({*PLAIN_FILES, *(f"{n}.gz" for n in GZIP_FILES), *BINARY_FILES})
REQUIRED_RUN_FILES = (FILES.config, DATA_FILE, FILES.history, FILES.metrics, f"{FILES.predictions}.gz")
