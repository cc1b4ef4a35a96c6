"""Build the book: execute every chapter notebook with papermill for a profile, then Jupyter Book.

Notebooks run in order into ``book/executed/``; each output is written to a
temporary file and renamed only when the notebook succeeded. A failing
notebook stops the build with its name and cell, leaves its partial output
beside as ``<name>.failed.ipynb``, and removes the previous HTML so no stale
book is presented as fresh.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skinlib.data.paths import DATA_ENV, ISIC_TEST_ENV, project_root, resolve_data_dir
from skinlib.io import atomic_write_json, atomic_write_text, temporary_env
from skinlib.profiles import PARAMETERS, PROFILES, SUMMARIES, comparable_with_paper, get_profile
from skinlib.runs import NO_TRAIN_ENV, RUNS_ENV, runs_root

log = logging.getLogger(__name__)

CHAPTERS: tuple[str, ...] = (
    "01_data", "02_baselines", "03_pretraining", "04_attention", "05_losses", "06_final_model", "07_efficiency",
    "08_reproduction",
)
SOLUTION_TAG = "solution"  # cells left out of the student edition (`skinlib book --student`, `export --student`)
PROFILE_FILE = ".parameters.json"  # the parameters each executed chapter was run with
PROVENANCE_FILE = "provenance.md"  # included by the landing page: where the numbers come from
FINDINGS_FILE = "findings.md"  # included at the top of the landing page: what this build found


class BookError(RuntimeError):
    """A chapter or the book build failed."""


@dataclass
class BookResult:
    """What a book build did: chapters executed with their seconds, runs trained, where the HTML is."""

    html: Path
    executed: dict[str, float] = field(default_factory=dict)
    build_seconds: float = 0.0
    trained: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)


def finished_runs(runs_dir: Path) -> dict[str, int]:
    """Finished runs of a run store with the modification time of their ``metrics.json``."""
    if not runs_dir.is_dir():
        return {}
    return {p.parent.name: p.stat().st_mtime_ns for p in runs_dir.glob("*/metrics.json")}


def book_root(root: str | os.PathLike | None = None) -> Path:
    """The repository root holding ``_config.yml`` and ``notebooks/``: the argument, else the current folder
    when it is one (a second clone), else the checkout skinlib is installed from."""
    cwd = Path.cwd()
    here = (cwd / "_config.yml").is_file() and (cwd / "notebooks").is_dir()
    path = Path(root) if root is not None else (cwd if here else project_root() or cwd)
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
                if key not in PROFILES["smoke"] and key not in ("profile", "data_dir", "runs_dir"):
                    out[key] = _literal(info["default"])
    return out


def _literal(text: str) -> Any:
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None


def _values_line(values: dict[str, Any]) -> str:
    return ", ".join(f"`{k}` = `{json.dumps(v)}`" for k, v in values.items())


def profile_note(profile: str, used: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None) -> Any:
    """The admonition heading every chapter: the profile, the values actually used, and whether the
    numbers may be set against the paper's (IPython Markdown)."""
    from IPython.display import Markdown

    used, overrides = used or {}, overrides or {}
    values = f"\n\nValues used: {_values_line(used)}." if used else ""
    changed = (f"\n\nChanged from the profile: {_values_line(overrides)}; the numbers below come from "
               "these values, not from the profile's.") if overrides else ""
    if comparable_with_paper(profile) and not overrides:
        return Markdown(f":::{{note}}\nBuilt with the `{profile}` profile: full data, the paper's scale."
                        f"{values}\n:::")
    if comparable_with_paper(profile):
        return Markdown(f":::{{warning}}\nBuilt with the `{profile}` profile **with changes**, so not at the "
                        f"paper's scale.{values}{changed}\n:::")
    return Markdown(
        f":::{{warning}}\nBuilt with the **`{profile}` profile**: {SUMMARIES.get(profile, 'a custom profile')}. "
        f"Run `skinlib book --profile paper` on a GPU for the paper's scale.{values}{changed}\n:::")


@dataclass
class Chapter:
    """What a chapter notebook works with: the profile's values after the caller's overrides."""

    profile: str
    params: dict[str, Any]
    overrides: dict[str, Any]
    data_dir: str | None = None
    runs_dir: str | None = None

    def __getattr__(self, name: str) -> Any:
        params = self.__dict__.get("params", {})
        if name in params:
            return params[name]
        raise AttributeError(f"chapter has no parameter {name!r}; it has {', '.join(params)}")

    @property
    def where(self) -> dict[str, str | None]:
        """The data and run-store folders as keyword arguments of the training functions."""
        return {"data_dir": self.data_dir, "runs_dir": self.runs_dir}

    @property
    def config(self) -> Any:
        """The base :class:`~skinlib.runs.RunConfig` of the chapter's runs."""
        from skinlib.experiments import profile_config

        return profile_config(self.params)


def chapter(namespace: Mapping[str, Any] | None = None, *, profile: str | None = None, data_dir: str | None = "",
            runs_dir: str | None = "", show: bool = True, **params: Any) -> Chapter:
    """Start a chapter notebook: resolve the profile, apply the parameters the caller set, quiet the logs.

    ``chapter(globals())`` reads the notebook's parameters cell: ``profile``, the folders and
    every profile parameter (:data:`~skinlib.profiles.PARAMETERS`) it declares; keyword
    arguments name them one by one instead (and win over the namespace). A parameter left
    ``None`` takes the profile's value, so ``papermill ... -p profile paper`` runs at the
    paper's scale. Unknown names and values of the wrong type raise ``ValueError``. The
    heading admonition (``show``) states the profile and every value used.
    """
    if namespace is not None:
        params = {**{k: namespace[k] for k in PARAMETERS if k in namespace}, **params}
        profile = profile if profile is not None else namespace.get("profile")
        data_dir = data_dir or namespace.get("data_dir", "")
        runs_dir = runs_dir or namespace.get("runs_dir", "")
    if profile is None:
        raise ValueError(f"chapter() needs a profile; valid: {', '.join(PROFILES)}")
    logging.basicConfig(level=logging.WARNING, force=True)
    import pandas as pd

    pd.set_option("display.max_colwidth", None)  # a table's text cells whole, never cut to "stratified by..."
    given = {k: v for k, v in params.items() if v is not None}
    values = get_profile(profile, **given)
    overrides = {k: v for k, v in given.items() if PROFILES[profile].get(k) != v}
    used = {k: values[k] for k in params}
    ctx = Chapter(profile, used, overrides, data_dir or None, runs_dir or None)
    if show:
        from IPython.display import display

        display(profile_note(profile, used, overrides))
        from skinlib.data import load_ham10000

        try:  # the data's notes read the index once
            index = load_ham10000(data_dir or None)
        except (FileNotFoundError, ValueError):
            index = None
        if index is not None:
            for note in (data_note(index), size_note(values["image_size"], index)):
                if note is not None:
                    display(note)
    return ctx


def size_note(image_size: int, index: Any) -> Any | None:
    """When the profile trains at a larger size than the data's images (of ``index``) have, the warning that says
    the models saw them upsampled (with both sizes); else ``None``."""
    from PIL import Image

    present = next((p for p in index["path"] if os.path.isfile(p)), None)
    if present is None:
        return None
    with Image.open(present) as im:
        width, height = im.size
    if image_size <= max(width, height):
        return None
    return admonition("warning", "Images upsampled",
                      f"The data's images are {width}x{height} pixels, and this profile trains at {image_size}x"
                      f"{image_size}: the models see them upsampled, with no detail beyond the source's. The numbers "
                      f"on this page are those of upsampled images (the HAM10000 originals are 600x450).")


def data_note(index: Any) -> Any | None:
    """When ``index`` comes from a results bundle's data summary (no images here), the admonition that says so,
    with the data key the runs were checked against and the data's licence; else ``None``."""
    from skinlib.data import fingerprint
    from skinlib.data.snapshot import LICENCE, is_snapshot

    if not is_snapshot(Path(index.attrs.get("source", "")).parent):
        return None
    return admonition(
        "note", "Data from the results bundle",
        f"This machine has no HAM10000 images, so the tables and images on this page come from the results "
        f"bundle's data summary: the metadata of all {len(index):,} images with the SHA-256 of each image file "
        f"(data key `{fingerprint(index).key}`; every run's own data key was checked against it) and the few "
        f"images drawn here. HAM10000 and the ISIC 2018 test set are licensed by their authors under {LICENCE} "
        f"(non-commercial use, with attribution; see {{doc}}`01_data`).")


def glue_text(**values: Any) -> None:
    """Glue each value, formatted as a string, for ``{glue:text}`` references in the chapter's prose."""
    from myst_nb import glue

    for key, value in values.items():
        glue(key, str(value), display=False)


def public_path(path: str | os.PathLike) -> str:
    """A path as a published page may show it: ``~/...`` under the home folder, relative inside the
    repository, else only its name (no machine's folders in the book)."""
    path = Path(path).expanduser().resolve()
    root = project_root()
    if root is not None and path.is_relative_to(root):
        return str(path.relative_to(root))
    home = Path.home().resolve()
    if path.is_relative_to(home):
        return str(Path("~") / path.relative_to(home))
    return path.name


def admonition(kind: str, title: str, text: str) -> Any:
    """A MyST admonition (``note``, ``warning``, ...) as notebook output."""
    from IPython.display import Markdown

    return Markdown(f":::{{{kind}}} {title}\n{text}\n:::")


def drop_solutions(nb: Any) -> int:
    """Remove the cells tagged ``solution`` and the hidden grade cells (:mod:`skinlib.grading`) from a notebook
    node; return how many."""
    from skinlib.grading import GRADE_TAG

    hidden = {SOLUTION_TAG, GRADE_TAG}
    kept = [c for c in nb.cells if not hidden & set(c.get("metadata", {}).get("tags", []))]
    dropped = len(nb.cells) - len(kept)
    nb.cells = kept
    return dropped


def _execute_until_complete(nb: Any, name: str, params: dict[str, Any], used: dict[str, Any], *, staged: Path,
                            tmp: Path, out_dir: Path, missing: list[str] | None) -> Any:
    """Run ``nb`` with papermill into ``tmp``; rendering a partial bundle (``missing``), each cell that needs a
    run it lacks becomes a note and the chapter runs again (:mod:`skinlib.partial`). Returns the gaps; any
    other error is raised as papermill's."""
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from skinlib import partial

    gaps = partial.Gaps()
    profile = str(params.get("profile", "?"))
    while True:
        nbformat.write(partial.apply(nb, gaps, profile=profile, missing=missing or []) if gaps else nb, staged)
        try:
            papermill.execute_notebook(str(staged), str(tmp), parameters=used, kernel_name="python3",
                                       cwd=str(out_dir), progress_bar=False, request_save_on_cell_execute=False)
            return gaps
        except PapermillExecutionError as exc:
            if missing is None or not partial.record(gaps, nbformat.read(tmp, as_version=4), exc.ename,
                                                     str(exc.evalue)):
                raise
            log.warning("%s: a cell needs runs the results bundle lacks; a note takes its place", name)


def execute_chapter(name: str, params: dict[str, Any], *, root: Path, student: bool = False,
                    missing: list[str] | None = None) -> float:
    """Execute ``notebooks/<name>.ipynb`` into ``book/executed/<name>.ipynb``; return seconds.

    ``student``: the solution cells are removed before execution, so neither their
    text nor their outputs reach the executed chapter. ``missing`` (rendering a partial
    results bundle: the runs it lacks): each cell that stops because it needs one of them,
    and each cell that builds on one, becomes a note naming what is missing, and the
    chapter is executed again without them (:mod:`skinlib.partial`): the page shows
    every table and figure the bundle's runs allow. Any other error still fails the build.
    """
    import nbformat
    from papermill.exceptions import PapermillExecutionError

    from skinlib import partial
    from skinlib.export import glued_values

    source = root / "notebooks" / f"{name}.ipynb"
    if not source.is_file():
        raise BookError(f"chapter notebook {source} is missing; chapters: {', '.join(CHAPTERS)}")
    out_dir = root / "book" / "executed"
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}.ipynb"
    tmp = out_dir / f".{name}.running.ipynb"
    failed = out_dir / f"{name}.failed.ipynb"
    staged = out_dir / f".{name}.source.ipynb"
    used = chapter_parameters(source, params)
    log.info("executing %s with %s%s", name, used, " (student edition: no solutions)" if student else "")
    start = time.perf_counter()
    nb = nbformat.read(source, as_version=4)
    if student:
        log.info("%s: %d solution cells left out", name, drop_solutions(nb))
    try:
        gaps = _execute_until_complete(nb, name, params, used, staged=staged, tmp=tmp, out_dir=out_dir,
                                       missing=missing)
    except PapermillExecutionError as exc:
        os.replace(tmp, failed)
        target.unlink(missing_ok=True)
        raise BookError(
            f"notebook {name} failed in cell {exc.cell_index} (execution count {exc.exec_count}): "
            f"{exc.ename}: {exc.evalue}\npartial output kept in {failed}"
        ) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        target.unlink(missing_ok=True)
        raise
    finally:
        staged.unlink(missing_ok=True)
    if gaps:
        executed = nbformat.read(tmp, as_version=4)
        partial.blank_absent_values(executed, glued_values(executed))
        nbformat.write(executed, tmp)
    _fold_parameter_cells(tmp, name)
    os.replace(tmp, target)
    failed.unlink(missing_ok=True)
    return time.perf_counter() - start


MAX_RENDER_JOBS = 4
# chapters that time models: executed alone, after the others, so no other chapter disturbs their clocks
TIMED_CHAPTERS: tuple[str, ...] = ("04_attention", "07_efficiency")


def _execute_in_child(name: str, params: dict[str, Any], root: str, student: bool, missing: list[str] | None,
                      threads: int) -> float:
    os.environ["OMP_NUM_THREADS"] = str(threads)  # inherited by the chapter's kernel
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return execute_chapter(name, params, root=Path(root), student=student, missing=missing)


def execute_chapters(chapters: list[str] | tuple[str, ...], params: dict[str, Any], *, root: Path,
                     student: bool = False, missing: list[str] | None = None, workers: int = 1,
                     done: Any = None) -> dict[str, float]:
    """Execute ``chapters`` (:func:`execute_chapter`), up to ``workers`` at a time in separate processes, the
    CPU threads split between them; the :data:`TIMED_CHAPTERS` run alone at the end. ``done(name, seconds)``
    is called as each finishes. The first failure is raised once the chapters already running have ended."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from skinlib.parallel import threads_per_job

    seconds: dict[str, float] = {}

    def finish(name: str, took: float) -> None:
        seconds[name] = took
        if done is not None:
            done(name, took)

    side_by_side = [c for c in chapters if c not in TIMED_CHAPTERS] if workers > 1 else []
    if len(side_by_side) > 1:
        log.info("executing %s, %d at a time", ", ".join(side_by_side), workers)
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_execute_in_child, name, params, str(root), student, missing,
                                   threads_per_job(workers)): name for name in side_by_side}
            try:
                for future in as_completed(futures):
                    finish(futures[future], future.result())
            except BaseException:
                pool.shutdown(cancel_futures=True)  # those not started yet never start
                raise
    else:
        side_by_side = []
    for name in chapters:
        if name not in side_by_side:
            finish(name, execute_chapter(name, params, root=root, student=student, missing=missing))
    return seconds


def _fold_parameter_cells(path: Path, name: str | None = None) -> None:
    """Leave the parameter cells (the notebook's and papermill's injected one) out of the page, so a chapter
    opens with one folded setup cell (whose note states the values used; the downloadable notebook keeps
    both cells), and replace papermill's record of the machine's folders (``input_path``,
    ``output_path``) by the repository's relative paths: the book serves this file for download."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    record = nb.metadata.get("papermill", {})
    if name is not None and record:
        record["input_path"] = f"notebooks/{name}.ipynb"
        record["output_path"] = f"book/executed/{name}.ipynb"
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if ("parameters" in tags or "injected-parameters" in tags) and "remove-cell" not in tags:
            tags.append("remove-cell")
    nbformat.write(nb, path)


def build_html(root: Path) -> Path:
    """Run Jupyter Book on the repository root, failing on any warning (a missing glue key included)."""
    html = root / "_build" / "html"
    exe = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(exe) if exe.is_file() else "jupyter-book", "build", str(root),
           "--all", "--warningiserror", "--keep-going"]
    log.info("building the book: %s", " ".join(cmd))
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(html, ignore_errors=True)
        lines = (proc.stdout + proc.stderr).splitlines()
        problems = [ln for ln in lines if "WARNING" in ln or "ERROR" in ln or "Error" in ln]
        shown = "\n".join(problems[:30] or lines[-40:])
        raise BookError(f"jupyter-book build failed (exit {proc.returncode}); the book was removed:\n{shown}")
    return html


DISTANCE_KEYS = ("top1", "ovr", "ovr_majority", "gap_acc", "memorisation", "pretrain_gain")


def distance_summary(executed: Path) -> list[str]:
    """The landing page's short account of why these numbers differ from the paper's, filled from the values the
    reproduction chapter computed and glued (nothing when that chapter has not been executed)."""
    import nbformat

    from skinlib.export import glued_values

    path = executed / "08_reproduction.ipynb"
    if not path.is_file():
        return []
    glued = glued_values(nbformat.read(path, as_version=4))
    if not all(k in glued for k in DISTANCE_KEYS):
        return []
    g = glued
    return ["### Why these numbers differ from the paper's", "",
            f"Four causes, each measured or bounded in {{doc}}`executed/08_reproduction`: **what the number "
            f"means** (our final model's top-1 accuracy is {g['top1']}, its mean one-vs-rest accuracy, the paper's "
            f"eq. 8, {g['ovr']}, and the majority class alone scores {g['ovr_majority']} under that reading); "
            f"**the split** (an image-level split changes accuracy by {g['gap_acc']} points here; "
            f"{g['memorisation']}); **ImageNet pre-training** ({g['pretrain_gain']} points of accuracy for "
            f"MobileNetV3-Small in the paper's own Table 2); and **the scale of this profile** (resolution, "
            f"epochs, data), which only the `gpu` and `paper` profiles can measure. The paper's own split and "
            f"metric reading remain unknown.", ""]


# the landing page's findings: (chapter, sentence with {glued} names); a sentence whose values a chapter did not
# glue (not executed, or a page standing in for missing runs) is left out
FINDINGS: tuple[tuple[str, str], ...] = (
    ("02_baselines", "**Baselines** (the paper's Table 3): {ranking}"),
    ("04_attention", "**Attention**: {caco_vs_se}"),
    ("05_losses", "**Losses**: on validation the study chose {chosen_loss}; each loss against plain CE on test "
                  "`bacc`: {bacc_words}."),
    ("06_final_model", "**The final model** (MobileNetV3-CaCo, {final_loss}): test `bacc` {final_bacc} and accuracy "
                       "{final_acc} (in %, with 95 % intervals); {vs_baseline}"),
    ("06_final_model", "**External test** (ISIC 2018 Task 3): `bacc` {ext_bacc} and accuracy {ext_acc} (in %)."),
)


def findings_page(profile: str, executed: Path) -> str:
    """The top of the landing page: whether these numbers may be set against the paper's, then what this build
    found, each sentence filled from the values its chapter computed and glued."""
    import nbformat

    from skinlib.export import glued_values

    if comparable_with_paper(profile):
        head = f"Built with the `{profile}` profile: full data at the paper's scale, comparable with its numbers."
    else:
        head = (f"**These numbers are not comparable with the paper's.** Built with the `{profile}` profile: "
                f"{SUMMARIES.get(profile, 'a custom profile')}.")
    lines = [":::{important}", head, ":::", "", "## What this build found", ""]
    glued: dict[str, dict[str, str]] = {}
    for chapter, sentence in FINDINGS:
        path = executed / f"{chapter}.ipynb"
        if chapter not in glued:
            glued[chapter] = glued_values(nbformat.read(path, as_version=4)) if path.is_file() else {}
        try:
            lines.append(f"- {sentence.format(**glued[chapter])} ({{doc}}`executed/{chapter}`)")
        except KeyError:
            continue
    if lines[-1] == "":
        lines.append("No chapter with results was executed in this build.")
    return "\n".join(lines) + "\n"


def provenance_page(profile: str, values: dict[str, Any], stamps: dict[str, Any], *,
                    data_dir: str | os.PathLike | None, runs_dir: str | os.PathLike | None,
                    bundle: dict[str, Any] | None, executed: Path | None = None, from_snapshot: bool = False) -> str:
    """The landing page's "Where these numbers come from": profile per chapter, when and on which device the
    runs were computed (from the runs' metrics, or the results bundle's metadata), and the command to redo it."""
    from skinlib.results import profile_runs

    runs = profile_runs(values, data_dir=data_dir, runs_dir=runs_dir).finished
    envs = [r.metrics().get("environment", {}) for r in runs]
    times = sorted(e["finished_utc"] for e in envs if e.get("finished_utc"))
    devices = sorted({e.get("gpu") or e.get("device", "unknown") for e in envs})
    torches = sorted({e.get("torch", "?") for e in envs})
    when = (f"between {times[0]} and {times[-1]} (UTC)" if len(times) > 1 and times[0] != times[-1]
            else f"on {times[0]} (UTC)" if times else "at an unrecorded time (older runs)")
    lines = ["| chapter | profile | numbers |", "| --- | --- | --- |"]
    source = "results bundle, rendered without training" if bundle else "runs trained or reused by this build"
    for name in CHAPTERS:
        stamp = stamps.get(name)
        if stamp is None:
            continue
        lines.append(f"| {name.replace('_', ' ')} | `{stamp.get('profile', '?')}` | {source} |")
    summary = SUMMARIES.get(profile, "a custom profile")
    text = [f"The chapters were executed with the **`{profile}`** profile: {summary}. "
            f"Their {len(runs)} training runs were finished {when} on {', '.join(devices) or 'no device'} "
            f"(PyTorch {', '.join(torches) or '?'}).", ""]
    if bundle:
        commit = f" from commit `{bundle['git_commit']}`" if bundle.get("git_commit") else ""
        text += [f"They come from the committed results bundle `results/{bundle['profile']}`, packed "
                 f"{bundle['packed_utc']}{commit}; this book was rendered from it on a machine that trained nothing"
                 + (", and had no data: the data tables and drawn images come from the bundle's data summary "
                    "(every image's metadata and SHA-256, and the few images the chapters draw)." if from_snapshot
                    else "; the data here was checked to be the data the runs were trained on."), ""]
    if bundle:
        again = (f"To render this book again: `make book PROFILE={profile}`; to compute its runs again on a GPU: "
                 f"`benchmarks/gpu_results.sh SECONDS OUT`")
    else:
        again = f"To compute them again: `{'make book' if profile == 'smoke' else f'skinlib book --profile {profile}'}`"
    text += [*lines, "", f"{again} (see {{doc}}`/book/reproduce` for the hardware and time per profile).", ""]
    if executed is not None:
        text += distance_summary(executed)
    if any(stamps.get(name, {}).get("student") for name in CHAPTERS):
        text += ["This is the **student edition**: the exercises keep their hints, their solutions are left out "
                 "(`skinlib book --student`).", ""]
    return "\n".join(text)


def _no_data() -> bool:
    try:
        resolve_data_dir(None)
    except FileNotFoundError:
        return True
    return False


def _check_models_fit(values: dict[str, Any]) -> None:
    """Every model the book trains accepts the profile's image size: one error line before any chapter runs,
    not a failure in the middle of chapter 02 (``-p image_size 32``)."""
    from skinlib.experiments import profile_models
    from skinlib.models import check_image_size

    for model in profile_models(values):
        check_image_size(model, int(values["image_size"]))


def _bundle_source(profile: str, root: Path, *, from_results: bool | str | os.PathLike,
                   data_dir: str | os.PathLike | None) -> Path | None:
    """The results bundle a build renders: the one asked for, the committed ``results/<profile>`` when there is
    no data here to train on, else none (the chapters train)."""
    from skinlib.results import BUNDLE_FILE, bundle_dir

    if not from_results and not data_dir and _no_data():
        if (bundle_dir(profile, root / "results") / BUNDLE_FILE).is_file():
            log.warning("no data here to train the %s runs on: rendering the committed bundle results/%s instead",
                        profile, profile)
            from_results = True
    if not from_results:
        return None
    return bundle_dir(profile, root / "results") if from_results is True else Path(from_results)


def _data_folders(data_dir: str | os.PathLike | None, source: Path | None) -> dict[str, str]:
    """The data folders the chapters read (as environment variables): the data found here, else, rendering a
    bundle, its data summary (whose data keys the runs' are checked against)."""
    try:
        return {DATA_ENV: str(resolve_data_dir(data_dir))}
    except FileNotFoundError:
        if source is None or data_dir:
            raise
    from skinlib.data.snapshot import ISIC_FOLDER
    from skinlib.results import data_snapshot

    snapshot = data_snapshot(source)
    log.info("no data here: rendering %s from its data summary", source)
    return {DATA_ENV: str(snapshot), ISIC_TEST_ENV: str(snapshot / ISIC_FOLDER)}


def _check_only(chapters: list[str], stamps: dict[str, Any], stamp: dict[str, Any], *, executed_dir: Path,
                profile: str, student: bool) -> None:
    """``--only``: the other chapters must have been executed, as the same edition; other parameters warn."""
    others = [c for c in CHAPTERS if c not in chapters]
    missing = [c for c in others if not (executed_dir / f"{c}.ipynb").is_file() or c not in stamps]
    if missing:
        raise BookError(f"--only needs the other chapters executed first (missing: {', '.join(missing)}); "
                        f"run `skinlib book --profile {profile}` once without --only")
    mixed = [c for c in others if bool(stamps[c].get("student")) != student]
    if mixed:
        edition = "student edition (no solutions)" if student else "edition with solutions"
        raise BookError(f"--only would mix editions: the {edition} of {', '.join(chapters)} beside "
                        f"{', '.join(mixed)} executed as the other one; run `skinlib book --profile {profile}"
                        f"{' --student' if student else ''}` once without --only")
    differ = [c for c in others if stamps[c] != stamp]
    if differ:
        log.warning("chapters %s were executed with other parameters than %s now", differ, chapters)


def _open_bundle(source: Path, values: dict[str, Any], folders: dict[str, str]) -> tuple[dict, list[str] | None]:
    """Unpack the bundle into the run store and switch training off (in ``folders``, the chapters'
    environment); return its metadata and, for a partial bundle, the runs it lacks."""
    from skinlib.models.weights import PRETRAINED_ENV
    from skinlib.results import profile_runs, unpack
    from skinlib.runs import Run

    bundle = unpack(source, data_dir=folders[DATA_ENV], runs_dir=folders[RUNS_ENV]).meta
    folders[NO_TRAIN_ENV] = "1"
    # the book asks for the pre-trained runs the bundle holds, whatever weight files are on this machine
    configs = [Run.open(Path(folders[RUNS_ENV]) / e["folder"]).config for e in bundle["runs"]]
    folders[PRETRAINED_ENV] = ",".join(sorted({c.model for c in configs if c.pretrained}))
    if bundle.get("complete") is True:
        return bundle, None
    # a partial bundle: the chapters show what it holds and name what it lacks
    with temporary_env({PRETRAINED_ENV: folders[PRETRAINED_ENV]}):
        state = profile_runs(values, data_dir=folders[DATA_ENV], runs_dir=folders[RUNS_ENV])
    missing = [f"{c.name} seed {c.seed}" for c in state.missing] + \
        ([] if state.final_known else ["the final model (after the loss study)"])
    return bundle, missing or None  # nothing lacking: any missing run is an error, as for a complete one


def build_book(
    profile: str = "smoke",
    *,
    data_dir: str | os.PathLike | None = None,
    params: dict[str, Any] | None = None,
    only: list[str] | None = None,
    root: str | os.PathLike | None = None,
    runs_dir: str | os.PathLike | None = None,
    jobs: int = 1,
    from_results: bool | str | os.PathLike = False,
    student: bool = False,
) -> BookResult:
    """Execute the chapters for ``profile`` (all, or ``only`` some) and build the HTML book.

    With ``jobs > 1`` every run the chapters use is trained first, ``jobs`` at a time
    (:func:`skinlib.experiments.train_all`); the chapters then only read finished runs.
    ``from_results`` (``True``: ``results/<profile>``, or a bundle folder) unpacks a
    results bundle into the run store and renders it with training switched off; without data
    here and with ``results/<profile>`` committed, that bundle is rendered. A run a complete
    bundle lacks stops the build with its name and the command that makes it; a partial bundle
    renders what it holds (:mod:`skinlib.partial`).
    ``student`` builds the student edition: the exercises keep their hints, the solution
    cells are left out of every chapter.
    """
    root_path = book_root(root)
    try:
        import myst_nb  # noqa: F401
        import papermill  # noqa: F401
    except ImportError as exc:
        raise BookError(f"building the book needs skinlib's book extra ({exc.name} is missing): "
                        "pip install -e '.[book]' (make book does this)") from exc
    values = get_profile(profile, extra=chapter_defaults(root_path), **(params or {}))
    _check_models_fit(values)
    # the folders reach the notebooks through the environment: no machine path is printed in the book
    folders = {RUNS_ENV: str(runs_root(runs_dir))}
    source = _bundle_source(profile, root_path, from_results=from_results, data_dir=data_dir)
    folders.update(_data_folders(data_dir, source))
    chapters = list(CHAPTERS)
    if only:
        unknown = [c for c in only if c not in CHAPTERS]
        if unknown:
            raise ValueError(f"unknown chapter(s) {unknown}; valid: {', '.join(CHAPTERS)}")
        chapters = [c for c in CHAPTERS if c in only]
    stamp = {**values, "data_dir": folders[DATA_ENV], "runs_dir": folders[RUNS_ENV], "student": student}
    executed_dir = root_path / "book" / "executed"
    stamp_file = executed_dir / PROFILE_FILE
    stamps = json.loads(stamp_file.read_text()) if stamp_file.is_file() else {}
    if only:
        _check_only(chapters, stamps, stamp, executed_dir=executed_dir, profile=profile, student=student)
    bundle, missing = _open_bundle(source, values, folders) if source is not None else (None, None)
    html = root_path / "_build" / "html"
    shutil.rmtree(html, ignore_errors=True)  # never leave a stale book behind a failed run
    result = BookResult(html)
    runs_path = Path(folders[RUNS_ENV])
    before = finished_runs(runs_path)
    with temporary_env(folders):
        if jobs > 1 and only:
            log.info("--jobs applies to whole builds; with --only the chapters train their own runs, one at a time")
        if jobs > 1 and source is None and not only:
            from skinlib.experiments import profile_config, train_all

            config = profile_config(values)
            train_all(config, values["seeds"], pretrained=values["pretrained"], data_dir=folders[DATA_ENV],
                      runs_dir=folders[RUNS_ENV], jobs=jobs)
        for name in chapters:
            stamps.pop(name, None)
        atomic_write_json(stamp_file, stamps)

        def done(name: str, seconds: float) -> None:
            result.executed[name] = seconds
            stamps[name] = stamp
            atomic_write_json(stamp_file, stamps)

        # nothing left to train (a bundle, or every run trained above): chapters may execute side by side
        workers = min(os.cpu_count() or 1, MAX_RENDER_JOBS) if source is not None else (jobs if not only else 1)
        execute_chapters(chapters, values, root=root_path, student=student, missing=missing, workers=workers,
                         done=done)
        atomic_write_text(executed_dir / FINDINGS_FILE, findings_page(profile, executed_dir))
        atomic_write_text(executed_dir / PROVENANCE_FILE,
                          provenance_page(profile, values, stamps, data_dir=folders[DATA_ENV],
                                          runs_dir=folders[RUNS_ENV], bundle=bundle, executed=executed_dir,
                                          from_snapshot=ISIC_TEST_ENV in folders))
    after = finished_runs(runs_path)
    result.trained = sorted(k for k, t in after.items() if before.get(k) != t)
    result.reused = sorted(k for k in after if k in before and before[k] == after[k])
    log.info("runs trained by this build: %d (%s)", len(result.trained), ", ".join(result.trained) or "none")
    start = time.perf_counter()
    build_html(root_path)
    result.build_seconds = time.perf_counter() - start
    log.info("book built in %s", html)
    return result
