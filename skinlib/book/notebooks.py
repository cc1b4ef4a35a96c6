"""The chapter notebooks as files: their names, where they are, the parameters they declare, and the
solution cells a student edition leaves out."""

from __future__ import annotations

import ast
import logging
import os
import re
from pathlib import Path
from typing import Any

from skinlib.book.grading import GRADE_TAG
from skinlib.data import paths
from skinlib.study.profiles import PARAMETERS

log = logging.getLogger(__name__)


CHAPTERS: tuple[str, ...] = (
    "01_data", "02_baselines", "03_pretraining", "04_attention", "05_losses", "06_final_model", "07_efficiency",
    "08_reproduction",
)


SOLUTION_TAG = "solution"  # cells left out of the student edition (`skinlib book --student`, `export --student`)


PROFILE_FILE = ".parameters.json"  # the parameters each executed chapter was run with


class BookError(RuntimeError):
    """A chapter or the book build failed."""


def is_skinlib_checkout(path: Path) -> bool:
    """Whether ``path`` is a checkout of this project: ``_config.yml``, ``notebooks/`` and a ``pyproject.toml``
    naming the project ``skinlib`` (another Jupyter Book or papermill project is not one)."""
    if not ((path / "_config.yml").is_file() and (path / "notebooks").is_dir()):
        return False
    try:
        text = (path / "pyproject.toml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    project = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    return bool(project and re.search(r"^name\s*=\s*[\"']skinlib[\"']\s*$", project.group(1), re.M))


def book_root(root: str | os.PathLike | None = None) -> Path:
    """The repository root holding ``_config.yml`` and ``notebooks/``: the argument, else the current folder
    when it is a checkout of this project (a second clone, :func:`is_skinlib_checkout`), else the checkout
    skinlib is installed from. Another project's folder is never taken for it: commands that write (the book,
    the notebooks' parameters) act only inside this project."""
    cwd = Path.cwd()
    path = Path(root) if root is not None else (cwd if is_skinlib_checkout(cwd) else paths.project_root() or cwd)
    if not (path / "_config.yml").is_file() or not (path / "notebooks").is_dir():
        raise BookError(f"{path} is not the skinlib repository root (needs _config.yml and notebooks/)")
    return path.resolve()


def notebook_parameters(path: Path) -> dict[str, Any]:
    """The names and defaults a notebook declares in its ``parameters`` cell."""
    import papermill

    quiet = logging.getLogger("papermill")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # inspecting is not executing: no "Input Notebook" lines
    try:
        return papermill.inspect_notebook(str(path))
    finally:
        quiet.setLevel(level)


def chapter_source(name: str, root: str | os.PathLike | None = None) -> Path:
    """``notebooks/<name>.ipynb`` of the repository at ``root`` (default: this one); an unknown name lists the
    chapters."""
    path = book_root(root) / "notebooks" / f"{name}.ipynb"
    if not path.is_file():
        raise BookError(f"chapter notebook {path} is missing; chapters: {', '.join(CHAPTERS)}")
    return path


def chapter_parameters(path: Path, profile: dict[str, Any]) -> dict[str, Any]:
    """The profile values this notebook declares (papermill warns on unknown ones, so filter)."""
    declared = notebook_parameters(path)
    return {k: v for k, v in profile.items() if k in declared}


def chapter_defaults(root: Path, chapters: tuple[str, ...] = CHAPTERS) -> dict[str, Any]:
    """Every chapter's own parameters (not in the profiles) with their notebook defaults."""
    out: dict[str, Any] = {}
    for name in chapters:
        path = root / "notebooks" / f"{name}.ipynb"
        if path.is_file():
            for key, info in notebook_parameters(path).items():
                if key not in PARAMETERS and key not in ("profile", "data_dir", "runs_dir"):
                    out[key] = _literal(info["default"])
    return out


def _literal(text: str) -> Any:

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None


def drop_solutions(nb: Any) -> int:
    """Remove the cells tagged ``solution`` and the hidden grade cells (:mod:`skinlib.book.grading`) from a notebook
    node; return how many."""

    hidden = {SOLUTION_TAG, GRADE_TAG}
    kept = [c for c in nb.cells if not hidden & set(c.get("metadata", {}).get("tags", []))]
    dropped = len(nb.cells) - len(kept)
    nb.cells = kept
    return dropped
