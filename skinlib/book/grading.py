"""Coursework: answer cells students fill in, hidden checks with points, collecting and grading submissions.

A gradable exercise has three kinds of cells in the chapter's notebook:

- an *answer* cell (tag ``answer``; ``metadata.skinlib.question``) that students fill in, e.g.
  ``answer_02_2 = None``;
- the teacher's *solution* cells (tag ``solution``), left out of every student artefact;
- a *grade* cell (tags ``grade`` and ``remove-cell``) that computes the expected value itself and calls
  :func:`check` with the question's points. In the book the check runs on the solution and fails the build
  when the answer key is wrong; in a student edition the grade cells are left out like the solutions.

``skinlib grade collect`` gathers submissions from a folder (a learning platform's download), one notebook per
student; ``skinlib grade run`` puts each student's answer cells into the teacher's chapter (so a submission
cannot change anything else), executes it with papermill at the settings given, and writes a grade table.

Why not otter-grader or nbgrader: otter's ``grade`` runs submissions in Docker, and both re-execute notebooks
through nbconvert without papermill's parameters, so a chapter cannot be graded at tiny settings; nbgrader also
needs its course database and exchange. Both work offline otherwise; this module is the part of them a
parameterised chapter needs, about 200 lines.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skinlib.io import atomic_write_text, temporary_env

log = logging.getLogger(__name__)

ANSWER_TAG = "answer"
GRADE_TAG = "grade"
GRADING_ENV = "SKINLIB_GRADING"  # set while submissions are graded: checks record a score instead of failing
RECORD_PREFIX = "grade:"  # the glue name of a check's record
MAX_SUBMISSION_BYTES = 20 * 2**20


class GradingError(ValueError):
    """A submission or a grading request that cannot be graded as given."""


def grading() -> bool:
    return os.environ.get(GRADING_ENV, "") not in ("", "0")


def matches(answer: Any, expected: Any, *, tol: float = 0.0) -> bool:
    """Whether ``answer`` equals ``expected``: numbers within ``tol`` (absolute), sequences element by element,
    strings ignoring case and surrounding blanks."""
    if isinstance(expected, bool) or expected is None:
        return answer is expected or answer == expected
    if isinstance(expected, (int, float)):
        try:
            value = float(answer)
        except (TypeError, ValueError):
            return False
        return math.isfinite(value) and abs(value - float(expected)) <= tol
    if isinstance(expected, str):
        return isinstance(answer, str) and answer.strip().lower() == expected.strip().lower()
    if isinstance(expected, (list, tuple)):
        try:
            items = list(answer)
        except TypeError:
            return False
        return len(items) == len(expected) and all(matches(a, e, tol=tol) for a, e in zip(items, expected))
    return bool(answer == expected)


def check(question: str, answer: Any, expected: Any, *, points: float, tol: float = 0.0) -> bool:
    """Score one answer. While grading (:data:`GRADING_ENV`) the score is glued for the grade table and shown;
    otherwise (the book, run on the solution) a wrong answer is a wrong answer key and raises."""
    ok = matches(answer, expected, tol=tol)
    if not grading():
        if not ok:
            raise AssertionError(f"exercise {question}: the solution's answer {answer!r} does not match the "
                                 f"grade cell's expected {expected!r} (tolerance {tol}); fix the answer key")
        return ok
    from myst_nb import glue

    verdict = "right" if ok else ("no answer" if answer is None else "wrong")
    record = {"question": question, "points": points if ok else 0, "max": points, "verdict": verdict}
    glue(RECORD_PREFIX + question, json.dumps(record), display=False)
    print(f"exercise {question}: {verdict}, {record['points']} of {points} points")
    return ok


def run_answer(question: str, source: str, namespace: dict[str, Any]) -> None:
    """Execute a student's answer cell in the chapter's namespace; an error in it is shown and costs that
    question's points, never the rest of the chapter."""
    try:
        exec(compile(source, f"<answer to exercise {question}>", "exec"), namespace)
    except Exception as exc:  # the student's code: anything may go wrong
        print(f"exercise {question}: the answer cell failed: {type(exc).__name__}: {exc}")


def _tags(cell: Any) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def question_of(cell: Any) -> str | None:
    """The exercise an answer cell belongs to (``metadata.skinlib.question``)."""
    return cell.get("metadata", {}).get("skinlib", {}).get("question") if ANSWER_TAG in _tags(cell) else None


def answers(nb: Any) -> dict[str, str]:
    """The source of each answer cell of a notebook, by question."""
    out = {}
    for cell in nb.cells:
        question = question_of(cell)
        if question is not None and cell.cell_type == "code":
            out[question] = cell.source
    return out


def graded_notebook(source: Any, submission: Any) -> tuple[Any, list[str]]:
    """The teacher's chapter without its solutions, each answer cell running the submission's answer; and the
    questions the submission has no answer cell for (they keep the blank answer, worth nothing)."""
    import copy

    from skinlib.book.notebooks import SOLUTION_TAG

    given = answers(submission)
    nb = copy.deepcopy(source)
    nb.cells = [c for c in nb.cells if SOLUTION_TAG not in _tags(c)]
    absent = []
    for cell in nb.cells:
        question = question_of(cell)
        if question is None:
            continue
        if question not in given:
            absent.append(question)
            continue
        cell.source = ("from skinlib.book.grading import run_answer\n\n"
                       f"run_answer({question!r}, {given[question]!r}, globals())")
    return nb, absent


def _student_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).parts
    name = parts[0] if len(parts) > 1 else path.stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "student"


@dataclass
class Collected:
    students: dict[str, Path]
    rejected: dict[str, str]  # path relative to the source -> why


def collect(source: str | os.PathLike, out: str | os.PathLike, *, chapter: str,
            root: str | os.PathLike | None = None) -> Collected:
    """Copy one submission of ``chapter`` per student from ``source`` (``<student>/<any>.ipynb`` or
    ``<student>.ipynb``) into ``out/<student>.ipynb``. A file that is a link, too large, not a notebook, or
    has none of the chapter's answer cells is rejected with the reason; nothing is written outside ``out``."""
    import nbformat

    from skinlib.book.notebooks import chapter_source

    src, dest = Path(source), Path(out)
    if not src.is_dir():
        raise GradingError(f"submissions folder {src} does not exist")
    expected = set(answers(nbformat.read(chapter_source(chapter, root), as_version=4)))
    if not expected:
        raise GradingError(f"chapter {chapter} has no answer cells to grade")
    dest.mkdir(parents=True, exist_ok=True)
    found = Collected({}, {})
    for path in sorted(src.rglob("*.ipynb")):
        rel = str(path.relative_to(src))
        if ".ipynb_checkpoints" in path.parts:
            continue
        if path.is_symlink() or any(p.is_symlink() for p in path.relative_to(src).parents if str(p) != "."):
            found.rejected[rel] = "a link (copy the file itself)"
            continue
        if path.stat().st_size > MAX_SUBMISSION_BYTES:
            found.rejected[rel] = f"larger than {MAX_SUBMISSION_BYTES // 2**20} MB"
            continue
        try:
            nb = nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)
        except Exception as exc:  # any unreadable file is the student's, not ours
            found.rejected[rel] = f"not a readable notebook ({type(exc).__name__})"
            continue
        if not set(answers(nb)) & expected:
            found.rejected[rel] = f"none of {chapter}'s answer cells ({', '.join(sorted(expected))})"
            continue
        name = _student_name(path, src)
        if name in found.students:
            found.rejected[rel] = f"a second submission of {name} (kept {found.students[name].name})"
            continue
        target = dest / f"{name}.ipynb"
        atomic_write_text(target, nbformat.writes(nb))
        found.students[name] = target
    log.info("collected %d submissions of %s, rejected %d", len(found.students), chapter, len(found.rejected))
    return found


def _grade_one(path: Path, source: Any, questions: Sequence[str], feedback: Path, *, used: dict[str, Any],
               env: dict[str, str], timeout: float | None) -> list[dict[str, Any]]:
    """Execute one submission's answers in the teacher's chapter; its rows of the grade table (one per question)
    and its executed notebook in ``feedback``."""
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from skinlib.book.export import glued_values

    student = path.stem
    nb, absent = graded_notebook(source, nbformat.read(path, as_version=4))
    staged = feedback / f".{student}.source.ipynb"
    executed = feedback / f".{student}.running.ipynb"
    nbformat.write(nb, staged)
    problem = ""
    try:
        with temporary_env(env):
            papermill.execute_notebook(str(staged), str(executed), parameters=used, kernel_name="python3",
                                       cwd=str(feedback), progress_bar=False, execution_timeout=timeout)
    except PapermillExecutionError as exc:
        problem = f"the chapter stopped in cell {exc.cell_index}: {exc.ename}: {exc.evalue}"
    finally:
        staged.unlink(missing_ok=True)
    records = {}
    if executed.exists():
        done = nbformat.read(executed, as_version=4)
        records = {k[len(RECORD_PREFIX):]: json.loads(v) for k, v in glued_values(done).items()
                   if k.startswith(RECORD_PREFIX)}
        os.replace(executed, feedback / f"{student}.ipynb")
    rows = []
    for question in questions:
        record = records.get(question)
        if record is None:
            why = "no answer cell" if question in absent else problem or "its check did not run"
            record = {"points": 0, "max": _max_points(source, question), "verdict": why}
        rows.append({"student": student, "question": question, "points": record["points"],
                     "max": record["max"], "verdict": record["verdict"]})
    return rows


def grade(submissions: str | os.PathLike, out: str | os.PathLike, *, chapter: str, params: dict[str, Any],
          root: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None,
          runs_dir: str | os.PathLike | None = None, timeout: float | None = None) -> Any:
    """Grade every ``*.ipynb`` in ``submissions`` (as :func:`collect` leaves them): execute the teacher's
    chapter with each student's answers at ``params`` (papermill parameters; a shared run store means a run
    is trained once for all), keep the executed notebook as feedback in ``out/feedback/``, and write
    ``out/grades.csv``: one row per student and question. Returns the table."""
    import nbformat
    import pandas as pd

    from skinlib.book.notebooks import chapter_parameters, chapter_source
    from skinlib.data.paths import DATA_ENV
    from skinlib.runs import RUNS_ENV

    source_path = chapter_source(chapter, root)
    source = nbformat.read(source_path, as_version=4)
    questions = list(answers(source))
    files = sorted(Path(submissions).glob("*.ipynb"))
    if not files:
        raise GradingError(f"no submissions (*.ipynb) in {submissions}; gather them with `skinlib grade collect`")
    out = Path(out)
    feedback = out / "feedback"
    feedback.mkdir(parents=True, exist_ok=True)
    used = chapter_parameters(source_path, params)
    env = {GRADING_ENV: "1"}
    if data_dir:
        env[DATA_ENV] = str(Path(data_dir).resolve())
    if runs_dir:
        env[RUNS_ENV] = str(Path(runs_dir).resolve())
    rows = []
    for path in files:
        start = time.perf_counter()
        rows += _grade_one(path, source, questions, feedback, used=used, env=env, timeout=timeout)
        log.info("graded %s in %.0f s", path.stem, time.perf_counter() - start)
    table = pd.DataFrame(rows)
    atomic_write_text(out / "grades.csv", table.to_csv(index=False))
    totals = table.groupby("student")[["points", "max"]].sum()
    atomic_write_text(out / "totals.csv", totals.to_csv())
    return table


def _max_points(source: Any, question: str) -> float:
    """The points of ``question`` as its grade cell states them (``points=N``)."""
    for cell in source.cells:
        if GRADE_TAG in _tags(cell) and re.search(rf"check\(\s*['\"]{re.escape(question)}['\"]", cell.source):
            found = re.search(r"points\s*=\s*([0-9.]+)", cell.source)
            if found:
                return float(found.group(1))
    return 0.0
