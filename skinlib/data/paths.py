"""Where the data lives: one resolution order for every entry point.

Order: an explicit argument, then the ``SKINLIB_DATA_DIR`` environment
variable, then ``data/`` in the project, then ``../shared/data/`` beside it
(where the real data lies on the project's own machines and in CI).
"""

from __future__ import annotations

import os
from pathlib import Path

from skinlib.data.info import HAM10000_URLS

DATA_ENV = "SKINLIB_DATA_DIR"
ISIC_TEST_ENV = "SKINLIB_ISIC2018_TEST_DIR"


def project_root() -> Path | None:
    """The source checkout holding this package, when it is installed editable."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else None


def default_data_candidates() -> list[Path]:
    """The folders looked at, in order, when no data directory is given."""
    bases = [Path.cwd()]
    root = project_root()
    if root is not None and root not in bases:
        bases.append(root)
    out: list[Path] = []
    for base in bases:
        for cand in (base / "data", base.parent / "shared" / "data"):
            if cand not in out:
                out.append(cand)
    return out


def _no_data_message(tried: list[Path]) -> str:
    where = "\n".join(f"  - {p}" for p in tried)
    urls = "\n".join(f"  - {name}: {url}" for name, url in HAM10000_URLS.items())
    return (
        "No data directory found. Looked in:\n"
        f"{where}\n"
        "Download HAM10000 (images + HAM10000_metadata.csv or .tab) from:\n"
        f"{urls}\n"
        f"then pass --data-dir PATH or set {DATA_ENV}=PATH."
    )


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Return the data directory to use, or raise ``FileNotFoundError`` saying how to get it."""
    if data_dir is not None and str(data_dir) != "":
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"data directory {path} does not exist (given explicitly)")
        return path.resolve()
    env = os.environ.get(DATA_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"{DATA_ENV}={env} is not a directory; fix or unset it")
        return path.resolve()
    tried = default_data_candidates()
    for cand in tried:
        if cand.is_dir():
            return cand.resolve()
    raise FileNotFoundError(_no_data_message(tried))
