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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skinlib.book.execute import MAX_RENDER_JOBS, execute_chapters, finished_runs
from skinlib.book.notebooks import CHAPTERS, PROFILE_FILE, BookError, book_root, chapter_defaults
from skinlib.book.pages import (
    FINDINGS_FILE,
    MODEL_CARD_FILE,
    PROVENANCE_FILE,
    findings_page,
    model_card_page,
    provenance_page,
)
from skinlib.data.index import find_ham10000_metadata
from skinlib.data.paths import resolve_data_dir
from skinlib.data.snapshot import ISIC_FOLDER
from skinlib.io import atomic_write_json, atomic_write_text, replace_dir, temporary_env
from skinlib.models import check_image_size
from skinlib.policy import Policy, applied
from skinlib.runs import Run
from skinlib.runs.workspace import Workspace
from skinlib.study.bundle_format import BUNDLE_FILE, bundle_dir
from skinlib.study.experiments import profile_config, profile_models, train_all
from skinlib.study.inventory import profile_runs
from skinlib.study.profiles import Profile, get_profile
from skinlib.study.unpack import data_snapshot, unpack

log = logging.getLogger(__name__)


@dataclass
class BookResult:
    """What a book build did: chapters executed with their seconds, runs trained, where the HTML is."""

    html: Path
    executed: dict[str, float] = field(default_factory=dict)
    build_seconds: float = 0.0
    trained: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)


def build_html(root: Path, html: Path | None = None) -> Path:
    """Run Jupyter Book on the repository root, failing on any warning (a missing glue key included). It builds
    into a staging folder and puts the result at ``html`` (default ``_build/html``) only when the build
    succeeds: a failed build keeps the previous book whole."""
    html = html or root / "_build" / "html"
    staging = root / "_build" / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    exe = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(exe) if exe.is_file() else "jupyter-book", "build", str(root), "--path-output", str(staging),
           "--all", "--warningiserror", "--keep-going"]
    log.info("building the book: %s", " ".join(cmd))
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        lines = (proc.stdout + proc.stderr).splitlines()
        problems = [ln for ln in lines if "WARNING" in ln or "ERROR" in ln or "Error" in ln]
        shown = "\n".join(problems[:30] or lines[-40:])
        kept = "the previous book is kept" if (html / "index.html").is_file() else "no book was built"
        raise BookError(f"jupyter-book build failed (exit {proc.returncode}); {kept}:\n{shown}")
    replace_dir(staging / "_build" / "html", html)
    shutil.rmtree(staging, ignore_errors=True)
    return html


def _no_data() -> bool:
    try:
        resolve_data_dir(None)
    except FileNotFoundError:
        return True
    return False


def _check_models_fit(values: Profile) -> None:
    """Every model the book trains accepts the profile's image size: one error line before any chapter runs,
    not a failure in the middle of chapter 02 (``-p image_size 32``)."""

    for model in profile_models(values):
        check_image_size(model, values.image_size)


def _bundle_source(profile: str, root: Path, *, from_results: bool | str | os.PathLike,
                   data_dir: str | os.PathLike | None) -> Path | None:
    """The results bundle a build renders: the one asked for, the committed ``results/<profile>`` when there is
    no data here to train on, else none (the chapters train)."""

    if not from_results and not data_dir and _no_data():
        if (bundle_dir(profile, root / "results") / BUNDLE_FILE).is_file():
            log.warning("no data here to train the %s runs on: rendering the committed bundle results/%s instead",
                        profile, profile)
            from_results = True
    if not from_results:
        return None
    return bundle_dir(profile, root / "results") if from_results is True else Path(from_results)


def book_workspace(data_dir: str | os.PathLike | None, source: Path | None, *,
                   runs_dir: str | os.PathLike | None = None) -> Workspace:
    """The folders a build's chapters work in, resolved once: the run store, the image cache, and the data found
    here, else, rendering a bundle, its data summary (whose data keys the runs' are checked against)."""

    here = Workspace.resolve(runs_dir=runs_dir)
    try:
        found = resolve_data_dir(data_dir)
        find_ham10000_metadata(found)
        return Workspace(found, here.runs, here.cache)
    except FileNotFoundError as exc:
        if source is None:
            raise
        if data_dir:  # a data folder that holds no HAM10000: the bundle's summary instead, said in one line
            log.warning("%s; rendering %s from its data summary instead", str(exc).split(";")[0], source)

    snapshot = data_snapshot(source)
    log.info("no data here: rendering %s from its data summary", source)
    return Workspace(snapshot, here.runs, here.cache, snapshot / ISIC_FOLDER)


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


def _open_bundle(source: Path, values: Profile, workspace: Workspace
                 ) -> tuple[dict, dict[str, list[str]] | None, Policy]:
    """Unpack the bundle into the run store; return its metadata, for a partial bundle each chapter that lacks
    runs with the runs it lacks (the plan says which studies each chapter reads, so this is known before any
    chapter runs), and the policy the chapters render it under: training off, the bundle's pre-trained rows."""

    bundle = unpack(source, **workspace.where).meta
    # the book asks for the pre-trained runs the bundle holds, whatever weight files are on this machine
    configs = [Run.open(workspace.runs / e["folder"]).config for e in bundle["runs"]]
    policy = Policy(train=False, pretrained_models=tuple(sorted({c.model for c in configs if c.pretrained})))
    if bundle.get("complete") is True:
        return bundle, None, policy
    # a partial bundle: the chapters that lack runs show what it holds and name what it lacks
    with applied(train=False, pretrained_models=policy.pretrained_models):
        state = profile_runs(values, workspace)
    lacking = state.missing_by_chapter()
    for chapter, studies in state.chapters_lacking().items():
        log.warning("partial bundle: %s lacks runs of %s; it shows the rest", chapter, ", ".join(studies))
    # nothing lacking: any missing run is an error, as for a complete one; else a study shows what it holds
    return bundle, lacking or None, policy.replace(partial_bundle=bool(lacking))


def _check_book_extra() -> None:
    try:
        import myst_nb  # noqa: F401
        import papermill  # noqa: F401
    except ImportError as exc:
        raise BookError(f"building the book needs skinlib's book extra ({exc.name} is missing): "
                        "pip install -e '.[book]' (make book does this)") from exc


def _chosen_chapters(only: list[str] | None) -> list[str]:
    """Every chapter, or those of ``only`` in the book's order (an unknown name is an error listing them)."""
    if not only:
        return list(CHAPTERS)
    unknown = [c for c in only if c not in CHAPTERS]
    if unknown:
        raise ValueError(f"unknown chapter(s) {unknown}; valid: {', '.join(CHAPTERS)}")
    return [c for c in CHAPTERS if c in only]


def _write_pages(profile: str, values: Profile, stamps: dict[str, Any], workspace: Workspace, *,
                 bundle: dict[str, Any] | None, executed_dir: Path) -> None:
    """The landing page's findings and provenance, from the executed chapters."""
    atomic_write_text(executed_dir / FINDINGS_FILE, findings_page(profile, executed_dir))
    atomic_write_text(executed_dir / MODEL_CARD_FILE, model_card_page(profile, executed_dir))
    atomic_write_text(executed_dir / PROVENANCE_FILE,
                      provenance_page(profile, values, stamps, workspace=workspace, bundle=bundle,
                                      executed=executed_dir, from_snapshot=workspace.isic_test is not None))


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
    (:func:`skinlib.study.experiments.train_all`); the chapters then only read finished runs.
    ``from_results`` (``True``: ``results/<profile>``, or a bundle folder) unpacks a
    results bundle into the run store and renders it with training switched off; without data
    here and with ``results/<profile>`` committed, that bundle is rendered. A run a complete
    bundle lacks stops the build with its name and the command that makes it; a partial bundle
    renders what it holds (:mod:`skinlib.book.partial`).
    ``student`` builds the student edition: the exercises keep their hints, the solution
    cells are left out of every chapter.
    """
    root_path = book_root(root)
    _check_book_extra()
    values = get_profile(profile, extra=chapter_defaults(root_path), **(params or {}))
    _check_models_fit(values)
    source = _bundle_source(profile, root_path, from_results=from_results, data_dir=data_dir)
    workspace = book_workspace(data_dir, source, runs_dir=runs_dir)
    chapters = _chosen_chapters(only)
    stamp = {**values.to_dict(), **workspace.where, "student": student}
    executed_dir = root_path / "book" / "executed"
    stamp_file = executed_dir / PROFILE_FILE
    stamps = json.loads(stamp_file.read_text()) if stamp_file.is_file() else {}
    if only:
        _check_only(chapters, stamps, stamp, executed_dir=executed_dir, profile=profile, student=student)
    bundle, missing, policy = _open_bundle(source, values, workspace) if source is not None else (None, None, None)
    # the folders and the policy reach the notebooks through the environment: no machine path is printed
    # the student edition has its own folder; a build that fails before its end leaves the last book whole
    html = root_path / "_build" / ("student" if student else "") / "html"
    result = BookResult(html)
    before = finished_runs(workspace.runs)
    with temporary_env({**workspace.env(), **(policy.env() if policy is not None else {})}):
        if jobs > 1 and only:
            log.info("--jobs applies to whole builds; with --only the chapters train their own runs, one at a time")
        if jobs > 1 and source is None and not only:
            config = profile_config(values)
            train_all(config, values.seeds, pretrained=values.pretrained, workspace=workspace, jobs=jobs)
        for name in chapters:
            stamps.pop(name, None)
        atomic_write_json(stamp_file, stamps)

        def done(name: str, seconds: float) -> None:
            result.executed[name] = seconds
            stamps[name] = stamp
            atomic_write_json(stamp_file, stamps)

        # nothing left to train (a bundle, or every run trained above): chapters may execute side by side
        workers = min(os.cpu_count() or 1, MAX_RENDER_JOBS) if source is not None else (jobs if not only else 1)
        execute_chapters(chapters, values.to_dict(), root=root_path, student=student, missing=missing,
                         workers=workers, done=done)
        _write_pages(profile, values, stamps, workspace, bundle=bundle, executed_dir=executed_dir)
    after = finished_runs(workspace.runs)
    result.trained = sorted(k for k, t in after.items() if before.get(k) != t)
    result.reused = sorted(k for k in after if k in before and before[k] == after[k])
    log.info("runs trained by this build: %d (%s)", len(result.trained), ", ".join(result.trained) or "none")
    start = time.perf_counter()
    build_html(root_path, html)
    result.build_seconds = time.perf_counter() - start
    log.info("book built in %s", html)
    return result
