"""Execute chapters with papermill into ``book/executed/``: one at a time while runs are trained, side by
side when nothing is left to train; a failing chapter stops with its name and cell."""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from skinlib.book import partial
from skinlib.book.export import glued_values
from skinlib.book.notebooks import CHAPTERS, BookError, chapter_parameters, drop_solutions
from skinlib.runs import FILES
from skinlib.study.parallel import threads_per_job

log = logging.getLogger(__name__)


def finished_runs(runs_dir: Path) -> dict[str, int]:
    """Finished runs of a run store with the modification time of their ``metrics.json``."""
    if not runs_dir.is_dir():
        return {}
    return {p.parent.name: p.stat().st_mtime_ns for p in runs_dir.glob(f"*/{FILES.metrics}")}


def _execute_until_complete(nb: Any, name: str, params: dict[str, Any], used: dict[str, Any], *, staged: Path,
                            tmp: Path, out_dir: Path, missing: list[str] | None) -> Any:
    """Run ``nb`` with papermill into ``tmp``; rendering a partial bundle (``missing``), each cell that needs a
    run it lacks becomes a note and the chapter runs again (:mod:`skinlib.book.partial`). Returns the gaps; any
    other error is raised as papermill's."""
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError


    gaps = partial.Gaps()
    profile = str(params.get("profile", "?"))
    while True:
        nbformat.write(partial.apply(nb, gaps, profile=profile, missing=missing or []) if gaps else nb, staged)
        try:
            # the kernel stopped at once when the chapter is done: a graceful stop interrupts the idle kernel
            # first, which logs "ERROR | KeyboardInterrupt caught in kernel" into a green build
            papermill.execute_notebook(str(staged), str(tmp), parameters=used, kernel_name="python3",
                                       cwd=str(out_dir), progress_bar=False, request_save_on_cell_execute=False,
                                       shutdown_kernel="immediate")
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
    chapter is executed again without them (:mod:`skinlib.book.partial`): the page shows
    every table and figure the bundle's runs allow. Any other error still fails the build.
    """
    import nbformat
    from papermill.exceptions import PapermillExecutionError


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
                     student: bool = False, missing: Mapping[str, list[str]] | None = None, workers: int = 1,
                     done: Any = None) -> dict[str, float]:
    """Execute ``chapters`` (:func:`execute_chapter`), up to ``workers`` at a time in separate processes, the
    CPU threads split between them; the :data:`TIMED_CHAPTERS` run alone at the end. ``done(name, seconds)``
    is called as each finishes. The first failure is raised once the chapters already running have ended.
    ``missing`` maps each chapter that lacks runs (rendering a partial bundle) to the runs it lacks; any other
    chapter executes as from a complete bundle, where a missing run is an error."""


    seconds: dict[str, float] = {}

    def finish(name: str, took: float) -> None:
        seconds[name] = took
        if done is not None:
            done(name, took)

    side_by_side = [c for c in chapters if c not in TIMED_CHAPTERS] if workers > 1 else []
    if len(side_by_side) > 1:
        log.info("executing %s, %d at a time", ", ".join(side_by_side), workers)
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_execute_in_child, name, params, str(root), student, (missing or {}).get(name),
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
            finish(name, execute_chapter(name, params, root=root, student=student,
                                          missing=(missing or {}).get(name)))
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
