"""Where the data lives: one resolution order for every entry point.

Order: an explicit argument, then the ``SKINLIB_DATA_DIR`` environment
variable, then ``data/`` in the project, then ``../shared/data/`` beside it
(where the real data lies on the project's own machines and in CI).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from skinlib.data.info import HAM10000_URLS

log = logging.getLogger(__name__)

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
        "Fetch HAM10000, its masks and the ISIC 2018 test set (about 3 GB) into data/ with:\n"
        "  skinlib data download\n"
        f"or download them by hand from:\n{urls}\n"
        f"then pass --data-dir PATH or set {DATA_ENV}=PATH."
    )


def checked_dir(path: Path, what: str) -> Path:
    """``path`` resolved, or ``FileNotFoundError`` naming ``what`` set it when it is a file or absent."""
    if path.is_file():
        raise FileNotFoundError(f"{what} {path} is a file, not a folder; pass the folder that holds the data "
                                f"(perhaps {path.parent})")
    if not path.is_dir():
        raise FileNotFoundError(f"{what} {path} does not exist; pass an existing folder, fetch the data into it "
                                f"with `skinlib data download --dest {path}`, or run `skinlib data verify` with no "
                                "--data-dir to see where data is looked for")
    return path.resolve()


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Return the data directory to use, or raise ``FileNotFoundError`` saying how to get it."""
    if data_dir is not None and str(data_dir) != "":
        return checked_dir(Path(data_dir).expanduser(), "data directory (given explicitly)")
    env = os.environ.get(DATA_ENV)
    if env:
        return checked_dir(Path(env).expanduser(), f"{DATA_ENV}")
    tried = default_data_candidates()
    for cand in tried:
        if cand.is_dir():
            return cand.resolve()
    raise FileNotFoundError(_no_data_message(tried))


def walk_files(root: Path) -> Iterator[tuple[Path, list[str]]]:
    """``(folder, sorted file names)`` for every folder under ``root``, in sorted order.

    Symbolic links to folders are followed (a common way to point at a data disk);
    a folder reached twice through links (a loop, or two links to one place) is
    visited once.
    """
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:
            log.debug("skipping %s: already visited through another link", dirpath)
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames.sort()
        yield Path(dirpath), sorted(filenames)


def find_named(root: Path, name: str) -> list[Path]:
    """Every file called ``name`` under ``root`` (links followed), in sorted order."""
    return [folder / name for folder, files in walk_files(root) if name in files]
