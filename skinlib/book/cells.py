"""The chapters' papermill ``parameters`` cells, generated from :data:`skinlib.study.profiles.PARAMETERS`.

A profile parameter's type and meaning live in one place; each chapter declares the ones it
uses, and its parameters cell is written from that declaration, so the comments a papermill
user reads (``papermill --help-notebook``) never drift from the checks applied. A chapter's own
parameters (not profile ones, e.g. ``latency_runs``) keep their lines, after the generated ones.

    skinlib notebooks parameters          # rewrite the cells that are out of step
    skinlib notebooks parameters --check  # exit 1 naming them (CI, tests)
"""

from __future__ import annotations

import json
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from skinlib.book.figures import apply_figure_metadata
from skinlib.study.profiles import PARAMETERS

FOLDERS = (
    'profile: str = "smoke"  # parameter profile: smoke, cpu, gpu or paper (see skinlib.study.profiles)',
    'data_dir: str = ""  # data directory; empty: SKINLIB_DATA_DIR, data/, then ../shared/data/',
    'runs_dir: str = ""  # run store; empty: SKINLIB_RUNS_DIR or runs/ in the repository',
    'bundle: str = "auto"  # without data: auto renders the best committed results bundle; none trains; or a folder',
)
FOLDER_NAMES = ("profile", "data_dir", "runs_dir", "bundle")


def annotation(kind: Any) -> str:
    """The annotation of a profile parameter that defaults to ``None``, quoted in the form papermill's
    ``--help-notebook`` reads (``"Optional[int]"``, ``"Union[float, str, None]"``; it does not read ``int | None``)."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        names = ", ".join(a.__name__ for a in typing.get_args(kind))
        return f'"Union[{names}, None]"'
    return f'"Optional[{(typing.get_origin(kind) or kind).__name__}]"'


def line(name: str) -> str:
    """One profile parameter's line: its name, annotation, ``None`` and its meaning."""
    param = PARAMETERS[name]
    return f"{name}: {annotation(param.type)} = None  # {param.help}; None: the profile's value"


def _name(text: str) -> str:
    return text.split(":", 1)[0].strip()


def cell_source(current: str) -> str:
    """The parameters cell a chapter should have, given its current one: the folder lines it declares, its
    profile parameters (in :data:`PARAMETERS` order) written from the schema, then its own lines as they are."""
    lines = [ln for ln in current.splitlines() if ln.strip() and not ln.lstrip().startswith(("#", "from typing "))]
    names = [_name(ln) for ln in lines]
    folders = [f for f in FOLDERS if _name(f) in names]
    profile = [line(n) for n in PARAMETERS if n in names]
    own = [ln for ln, n in zip(lines, names) if n not in PARAMETERS and n not in FOLDER_NAMES]
    if not profile:
        return "\n".join([*folders, *own])
    used = [t for t in ("Optional", "Union") if any(f'"{t}[' in ln for ln in profile)]
    typing_line = f"from typing import {', '.join(used)}  # the annotations below, in the form papermill reads"
    return "\n".join([typing_line, "", *folders, *profile, *own])


def _parameters_cell(nb: dict[str, Any]) -> dict[str, Any]:
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"a chapter needs exactly one cell tagged 'parameters', found {len(cells)}")
    return cells[0]


REPO_URL = re.compile(r"https://github\.com/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+?(?=[\"/@ \n]|\.git|$)")
REPOSITORY_FILES = ("pyproject.toml", "CITATION.cff", "book/teachers.md")
"""Files that name the repository besides the chapters' install cells; ``_config.yml`` is the one setting."""


def repository_setting(root: Path) -> tuple[str, str]:
    """The repository URL and branch the book's buttons use: ``_config.yml``'s ``repository`` (the one setting a
    fork changes)."""
    repo = (yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8")) or {}).get("repository") or {}
    url, branch = str(repo.get("url", "")), str(repo.get("branch", "main"))
    if not REPO_URL.fullmatch(url):
        raise ValueError(f"_config.yml's repository.url {url!r} is not https://github.com/OWNER/NAME; set it to the "
                         f"repository the book's launch buttons should open")
    return url, branch


def pinned_install(text: str, url: str, ref: str) -> str:
    """A chapter's text whose install line installs skinlib from ``url`` at ``ref`` (a branch or a commit)."""
    return _with_repository(text, url, ref)


def _with_repository(text: str, url: str, branch: str) -> str:
    """``text`` with every GitHub repository URL replaced by ``url`` (an install line keeps ``@branch``)."""
    text = re.sub(r"(git\+)https://github\.com/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+@[A-Za-z0-9_./-]+",
                  lambda m: f"{m.group(1)}{url}@{branch}", text)
    return REPO_URL.sub(url, text)


def sync_repository(root: Path, *, write: bool) -> list[str]:
    """The files (install cells of the chapters, :data:`REPOSITORY_FILES`) that name another repository than
    ``_config.yml``'s (rewritten when ``write``)."""
    url, branch = repository_setting(root)
    stale = []
    for path in [*sorted((root / "notebooks").glob("*.ipynb")), *(root / f for f in REPOSITORY_FILES)]:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        wanted = _with_repository(text, url, branch)
        if wanted != text:
            stale.append(str(path.relative_to(root)))
            if write:
                path.write_text(wanted, encoding="utf-8")
    return stale


def sync(root: Path, *, write: bool) -> list[str]:
    """The chapters under ``root/notebooks`` whose parameters cell is not the generated one, or whose figure
    captions are not those of :data:`skinlib.book.figures.FIGURES` (rewritten when
    ``write``; the rest of each notebook is kept byte for byte in its JSON layout)."""
    stale = []
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        try:
            nb = json.loads(path.read_text(encoding="utf-8"))
            cell = _parameters_cell(nb)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path.name} is not a chapter notebook this command can read ({str(exc)[:120]}); "
                             f"restore it from git (`git checkout -- notebooks/{path.name}`)") from None
        current = "".join(cell["source"])
        wanted = cell_source(current)
        figures = apply_figure_metadata(nb, path.stem)  # captions and alt text (skinlib.book.figures)
        if current == wanted and not figures:
            continue
        stale.append(path.stem)
        if write:
            parts = wanted.split("\n")
            cell["source"] = [p + "\n" for p in parts[:-1]] + [parts[-1]]
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return stale
