"""Grading coursework: each student's answers run in the teacher's chapter, scored against a key no student touches.

The order of work is the defence:

1. Every submission and the chapter are read into memory first, so nothing a student's code later writes to
   disk can change another student's answers or the chapter.
2. The *key run* executes the teacher's chapter once, with its solutions and grade cells and no student code
   (:func:`skinlib.book.grading.check` records each expected value, its points and tolerance). If it fails
   (no data, a wrong parameter, a wrong answer key), nobody is graded and the error says why: an
   infrastructure failure never becomes a student's grade.
3. Each student's run executes the chapter without solutions and grade cells, in a fresh working folder; each
   answer cell holds the student's code as written and may fail without stopping the chapter
   (``raises-exception``), and after it :func:`~skinlib.book.grading.record_answer` records the answer as plain
   data. Cells have a time limit, a killed kernel is caught, and outputs are capped.
4. The grader, outside the student's kernel, compares each recorded answer with the key: points come only from
   the key, so they never exceed a question's maximum. A run that fails in one of the teacher's cells is
   *not graded* (marked for review), never 0. The feedback notebook is the student's own run: no grade cell,
   no solution, with the scores on top.
5. The grader's own files (the ``skinlib`` package and the chapter) are fingerprinted before and after each
   student; a change stops the grading.

Where the system allows it (``isolation="namespace"``, the default where it works), each student's kernel starts
inside Linux namespaces (:mod:`skinlib.book.sandbox`): the teacher's chapters, the project's history and built
pages, the submissions and the grades are empty read-only folders to it, and it sees no other process. It still
runs with the grading user's id for everything else; for marks that matter, run ``skinlib grade run`` in a
container or a throwaway account. What this module guarantees everywhere is that no submission sets its own or
another student's score.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

import skinlib
from skinlib.book import sandbox
from skinlib.book.export import glued_values
from skinlib.book.grading import (
    ANSWER_PREFIX,
    GRADE_TAG,
    GRADING_ENV,
    KEY_PREFIX,
    GradingError,
    answers,
    matches,
    question_of,
    tags_of,
)
from skinlib.book.notebooks import SOLUTION_TAG, chapter_parameters, chapter_source
from skinlib.book.submissions import MAX_SUBMISSION_BYTES, _read
from skinlib.data.paths import DATA_ENV, project_root
from skinlib.io import atomic_write_text, temporary_env
from skinlib.runs import RUNS_ENV

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 600.0  # seconds one cell may run while grading
MAX_OUTPUT_CHARS = 100_000  # characters kept of one output in a feedback notebook
NOT_GRADED = "not graded"


@dataclass(frozen=True)
class Key:
    """One question's answer key, as the key run recorded it."""

    expected: Any
    points: float
    tol: float


@dataclass
class Execution:
    """A finished (or stopped) execution of one notebook: the executed cells, and where and why it stopped."""

    nb: Any
    failed_cell: int | None = None  # index of the cell that stopped the run (None: it ran to the end)
    why: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    def records(self, prefix: str) -> dict[str, dict[str, Any]]:
        """The JSON records glued under ``prefix`` (a malformed record is skipped: the student's kernel made it)."""

        out = {}
        for name, text in glued_values(self.nb).items():
            if name.startswith(prefix) and len(text) < 1_000_000:
                try:
                    record = json.loads(text)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    out[name[len(prefix):]] = record
        return out


def _cap_outputs(cell: Any, **_: Any) -> None:
    """Keep at most :data:`MAX_OUTPUT_CHARS` of each text output of a cell (a student's huge print)."""
    for output in cell.get("outputs", []):
        text = output.get("text")
        if isinstance(text, str) and len(text) > MAX_OUTPUT_CHARS:
            output["text"] = text[:MAX_OUTPUT_CHARS] + f"\n[... {len(text) - MAX_OUTPUT_CHARS} more characters cut]\n"
        data = output.get("data", {})
        for mime, value in list(data.items()):
            if isinstance(value, str) and len(value) > MAX_OUTPUT_CHARS and not mime.startswith("application/"):
                data[mime] = value[:MAX_OUTPUT_CHARS]


def execute(nb: Any, parameters: dict[str, Any], *, env: dict[str, str], timeout: float | None,
            kernel: str = "python3") -> Execution:
    """Run a notebook with papermill's parameters in a fresh working folder on ``kernel`` (a kernel spec name),
    never raising for what the notebook does: an error, a cell over ``timeout`` seconds, or a dead kernel ends
    the run and is reported."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
    from papermill.parameterize import parameterize_notebook

    for cell in nb.cells:  # papermill reads every cell's tags (its own loader adds them)
        cell.setdefault("metadata", {})
        if not isinstance(cell.metadata.get("tags"), list):
            cell.metadata["tags"] = []
    nb.metadata.setdefault("papermill", {})
    nb = parameterize_notebook(nb, parameters, kernel_name="python3", language="python")
    where = {"cell": None}
    work = Path(tempfile.mkdtemp(prefix="skinlib-grade-"))
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel, resources={"metadata": {"path": str(work)}},
                            on_cell_start=lambda cell, cell_index: where.update(cell=cell_index),
                            on_cell_executed=_cap_outputs, shutdown_kernel="immediate")
    run = Execution(nb)
    try:
        with temporary_env(env):
            client.execute()
    except CellTimeoutError:
        run.failed_cell, run.why = where["cell"], f"a cell ran longer than {timeout:g} s and was stopped"
    except DeadKernelError:
        run.failed_cell, run.why = where["cell"], "the Python kernel died (the code ended its process)"
    except CellExecutionError as exc:
        run.failed_cell, run.why = where["cell"], f"{exc.ename}: {exc.evalue}"[:500]
    except Exception as exc:  # a kernel that cannot start, a protocol error: reported, never raised
        run.failed_cell, run.why = where["cell"], f"{type(exc).__name__}: {exc}"[:500]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return run


def answer_key(source: Any, parameters: dict[str, Any], *, env: dict[str, str], timeout: float | None
               ) -> dict[str, Key]:
    """Execute the teacher's chapter (solutions and grade cells, no student code) and read each question's key;
    any failure is a :class:`GradingError`, before anyone is graded."""

    run = execute(copy.deepcopy(source), parameters, env={**env, GRADING_ENV: "key"}, timeout=timeout)
    if run.failed_cell is not None:
        raise GradingError(f"the answer key could not be computed at these settings: the teacher's chapter stopped "
                           f"in cell {run.failed_cell}: {run.why}; nobody was graded (check the data, the "
                           f"parameters and the grade cells)")
    records = run.records(KEY_PREFIX)
    questions = list(answers(source))
    missing = [q for q in questions if q not in records]
    if missing:
        raise GradingError(f"no grade cell recorded a key for question(s) {', '.join(missing)}; each answer cell "
                           f"needs a grade cell calling check({missing[0]!r}, ...)")
    wrong = [q for q in questions if not records[q].get("solution_ok")]
    if wrong:
        raise GradingError(f"the solution does not earn the points of question(s) {', '.join(wrong)}: the answer key "
                           f"is wrong; nobody was graded")
    return {q: Key(records[q]["expected"], float(records[q]["points"]), float(records[q]["tol"]))
            for q in questions}


def student_notebook(source: Any, submission: Any) -> tuple[Any, list[str]]:
    """The teacher's chapter without its solutions and grade cells, each answer cell holding the submission's
    code as written (allowed to fail) followed by a cell recording the answer; and the questions the submission
    has no answer cell for (they keep the blank answer)."""

    import nbformat


    given = answers(submission)
    nb = copy.deepcopy(source)
    nb.cells = [c for c in nb.cells if not {SOLUTION_TAG, GRADE_TAG} & set(tags_of(c))]
    cells, absent = [], []
    for cell in nb.cells:
        cells.append(cell)
        question = question_of(cell)
        if question is None:
            continue
        if question in given:
            cell.source = given[question]
        else:
            absent.append(question)
        cell.metadata["tags"] = [*tags_of(cell), "raises-exception"]
        variable = f"answer_{question.replace('.', '_').replace('-', '_')}"
        record = nbformat.v4.new_code_cell(f"# grading: records your answer to exercise {question}\n"
                                           f"from skinlib.book.grading import record_answer\n\n"
                                           f"record_answer({question!r}, globals().get({variable!r}))")
        record.metadata["tags"] = ["raises-exception"]
        record.metadata["skinlib"] = {"records": question}
        cells.append(record)
    nb.cells = cells
    return nb, absent


def _answer_error(run: Execution, question: str) -> str | None:
    """The error an answer cell of ``question`` raised, if any."""
    for cell in run.nb.cells:
        if question_of(cell) == question:
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    return f"{output.get('ename', 'Error')}: {str(output.get('evalue', ''))[:200]}"
    return None


def _student_cell(run: Execution, index: int | None) -> str | None:
    """The question whose answer (or answer-recording) cell ``index`` is, or None for a teacher's cell."""
    if index is None or not 0 <= index < len(run.nb.cells):
        return None
    cell = run.nb.cells[index]
    meta = cell.get("metadata", {}).get("skinlib")
    return question_of(cell) or (meta.get("records") if isinstance(meta, dict) else None)


def score(run: Execution, keys: dict[str, Key], absent: list[str]) -> list[dict[str, Any]]:
    """One row per question: points from the key only, with the verdict (right, wrong, no answer, the error of
    the answer cell, or not graded when the teacher's part of the chapter failed)."""
    recorded = run.records(ANSWER_PREFIX)
    culprit = _student_cell(run, run.failed_cell)
    stopped_in_teacher_cell = run.failed_cell is not None and culprit is None
    rows = []
    for question, key in keys.items():
        record, error = recorded.get(question), _answer_error(run, question)
        points: float = 0.0
        if question in absent:
            verdict = "no answer cell"
        elif record is None:
            if stopped_in_teacher_cell:
                points, verdict = math.nan, f"{NOT_GRADED}: the chapter stopped before this answer was recorded " \
                                            f"({run.why}); review the feedback"
            else:
                verdict = f"exercise {culprit}'s answer cell stopped the run: {run.why}" if culprit else \
                    "the answer was not recorded"
        elif "unreadable" in record:
            verdict = f"unreadable answer: {str(record['unreadable'])[:200]}"
        elif record.get("value") is None:
            verdict = f"error in the answer cell: {error}" if error else "no answer"
        else:
            right = matches(record["value"], key.expected, tol=key.tol)
            points, verdict = (key.points if right else 0.0), ("right" if right else "wrong")
            if error:
                verdict += f" (the answer cell also raised {error})"
        rows.append({"question": question, "points": points, "max": key.points, "verdict": verdict})
    return rows


def _fingerprint(chapter_path: Path) -> str:
    """A digest of the grader's own code and the chapter: a student run that changes them is caught."""

    digest = hashlib.sha256(chapter_path.read_bytes())
    package = Path(skinlib.__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def feedback_notebook(run: Execution, student: str, rows: list[dict[str, Any]]) -> Any:
    """The student's executed run with their scores on top (no grade cell, no solution in it)."""
    import nbformat

    lines = [f"# Feedback for {student}", "", "| exercise | points | of | verdict |", "| --- | --- | --- | --- |"]
    for r in rows:
        shown = "–" if isinstance(r["points"], float) and math.isnan(r["points"]) else f"{r['points']:g}"
        lines.append(f"| {r['question']} | {shown} | {r['max']:g} | {r['verdict'].replace('|', '/')} |")
    if run.failed_cell is not None:
        lines += ["", f"The run stopped in cell {run.failed_cell}: {run.why}."]
    run.nb.cells.insert(0, nbformat.v4.new_markdown_cell("\n".join(lines)))
    return run.nb


def _read_submissions(files: list[Path]) -> tuple[dict[str, Any], dict[str, str]]:
    import nbformat


    read, unreadable = {}, {}
    for path in files:
        try:
            if path.stat().st_size > MAX_SUBMISSION_BYTES:
                raise ValueError(f"larger than {MAX_SUBMISSION_BYTES // 2**20} MB")
            read[path.stem] = nbformat.reads(_read(path), as_version=4)
        except Exception as exc:  # the student's file: reported in the grade table
            unreadable[path.stem] = f"unreadable submission ({type(exc).__name__})"
    return read, unreadable


@dataclass(frozen=True)
class RubricItem:
    """A written exercise graded by hand: its points and what earns them."""

    points: float
    criteria: str


BY_HAND = "by hand"


def read_rubric(path: str | os.PathLike) -> dict[str, RubricItem]:
    """A rubric file (YAML: ``question: {points: N, criteria: "..."}``) for the written exercises, checked."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise GradingError(f"rubric {path} cannot be read ({type(exc).__name__}); it is YAML: "
                           f"'06.2: {{points: 2, criteria: \"...\"}}'") from None
    if not isinstance(raw, dict) or not raw:
        raise GradingError(f"rubric {path} must map each written exercise to its points and criteria, e.g. "
                           f"'06.2: {{points: 2, criteria: \"...\"}}'")
    out = {}
    for question, item in raw.items():
        points = item.get("points") if isinstance(item, dict) else None
        criteria = item.get("criteria", "") if isinstance(item, dict) else None
        if isinstance(points, bool) or not isinstance(points, (int, float)) or not 0 < points <= 100 \
                or not isinstance(criteria, str):
            raise GradingError(f"rubric {path}: exercise {question!r} needs points (a number in (0, 100]) and "
                               f"criteria (text), e.g. '{question}: {{points: 2, criteria: \"...\"}}'")
        out[str(question)] = RubricItem(float(points), criteria.strip())
    return out


def totals(grades: Any) -> Any:
    """Points per student over every question (a question still to grade by hand counts as not yet scored)."""
    return grades.groupby("student")[["points", "max"]].sum(min_count=1)


def grade(submissions: str | os.PathLike, out: str | os.PathLike, *, chapter: str, params: dict[str, Any],
          root: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None,
          runs_dir: str | os.PathLike | None = None, timeout: float | None = DEFAULT_TIMEOUT,
          rubric: dict[str, RubricItem] | None = None, isolation: str = "auto") -> Any:
    """Grade every ``*.ipynb`` in ``submissions`` (as :mod:`~skinlib.book.submissions` collects them) against the
    key of ``chapter`` at ``params`` (papermill parameters; a shared run store means a run is trained once for
    all). Writes ``out/grades.csv`` (one row per student and question), ``out/totals.csv`` and each student's
    feedback in ``out/feedback/``; returns the table. Raises :class:`GradingError` before grading anyone when
    the key cannot be computed, and after the students graded so far when the grader's files change.
    ``isolation``: ``namespace`` starts each student's kernel out of reach of the teacher's files
    (:mod:`skinlib.book.sandbox`; an error where the system refuses it), ``none`` does not, ``auto`` isolates where
    the system allows it and warns where not."""
    import nbformat


    source_path = chapter_source(chapter, root)
    source = nbformat.read(source_path, as_version=4)
    folder = Path(submissions)
    files = sorted(p for p in folder.glob("*.ipynb") if p.is_file() and not p.is_symlink()) if folder.is_dir() else []
    if not files:
        raise GradingError(f"no submissions (*.ipynb) in {submissions}; gather them with `skinlib grade collect`")
    clash = sorted(set(rubric or {}) & set(answers(source)))
    if clash:
        raise GradingError(f"rubric names exercise(s) {', '.join(clash)}, which the chapter grades itself; the "
                           f"rubric is for written exercises only")
    read, unreadable = _read_submissions(files)  # everything read before any student code runs
    used = chapter_parameters(source_path, params)
    env = {}
    if data_dir:
        env[DATA_ENV] = str(Path(data_dir).resolve())
    if runs_dir:
        env[RUNS_ENV] = str(Path(runs_dir).resolve())
    isolated = _isolation(isolation)  # before the key run: a refusal writes nothing
    keys = answer_key(source, used, env=env, timeout=timeout)
    out = Path(out)
    feedback = out / "feedback"
    feedback.mkdir(parents=True, exist_ok=True)
    kernel, spec = _student_kernel(isolated, [folder, out], [source_path.parent.parent])
    rows: list[dict[str, Any]] = []
    for student, why in unreadable.items():
        rows += [{"student": student, "question": q, "points": 0.0, "max": k.points, "verdict": why}
                 for q, k in keys.items()]
    stopped = None
    before = _fingerprint(source_path)
    for student, submission in read.items():
        if stopped is not None:
            rows += [{"student": student, "question": q, "points": math.nan, "max": k.points,
                      "verdict": f"{NOT_GRADED}: grading stopped ({stopped})"} for q, k in keys.items()]
            continue
        start = time.perf_counter()
        nb, absent = student_notebook(source, submission)
        run = execute(nb, used, env={**env, GRADING_ENV: "answers", **spec}, timeout=timeout, kernel=kernel)
        graded = score(run, keys, absent)
        after = _fingerprint(source_path)
        if after != before:
            stopped = f"the grader's files changed while {student}'s submission ran"
            graded = [{**r, "points": math.nan, "verdict": f"{NOT_GRADED}: {stopped}; review it"} for r in graded]
        rows += [{"student": student, **r} for r in graded]
        atomic_write_text(feedback / f"{student}.ipynb", nbformat.writes(feedback_notebook(run, student, graded)))
        log.info("graded %s in %.0f s", student, time.perf_counter() - start)
    if spec:
        shutil.rmtree(spec["JUPYTER_PATH"].split(os.pathsep)[0], ignore_errors=True)
    students = sorted({r["student"] for r in rows})
    rows += [{"student": st, "question": q, "points": math.nan, "max": item.points,
              "verdict": f"{BY_HAND}: {item.criteria}"} for st in students for q, item in (rubric or {}).items()]
    table = pd.DataFrame(rows, columns=["student", "question", "points", "max", "verdict"])
    atomic_write_text(out / "grades.csv", table.to_csv(index=False))
    atomic_write_text(out / "totals.csv", totals(table).to_csv())
    if stopped is not None:
        raise GradingError(f"grading stopped: {stopped}; grades.csv marks that student and the rest not graded")
    return table


ISOLATIONS = ("auto", "namespace", "none")


def _isolation(isolation: str) -> bool:
    """Whether the students' kernels start in namespaces: ``namespace`` requires it (a :class:`GradingError`
    where the system refuses it), ``auto`` where the system allows it (a warning where not), ``none`` never."""
    if isolation not in ISOLATIONS:
        raise ValueError(f"isolation {isolation!r}: choose one of {', '.join(ISOLATIONS)}")
    if isolation == "none":
        return False
    why = sandbox.unavailable()
    if why is None:
        return True
    if isolation == "namespace":
        raise GradingError(f"cannot isolate the students' kernels: {why}; allow unprivileged user namespaces, "
                           f"grade in a container, or pass --isolation none")
    log.warning("student code runs without isolation (%s): it can read the chapter's solutions on disk; grade in "
                "a container for marks that matter", why)
    return False


def _student_kernel(isolated: bool, hidden: list[Path], projects: list[Path]) -> tuple[str, dict[str, str]]:
    """The kernel spec the students' runs use and the environment that finds it: with ``isolated``, the
    sandbox's, with ``hidden`` and, of each project (the chapter's and the checkout skinlib runs from), the
    chapters, history and built pages out of reach; else plain ``python3``."""
    if not isolated:
        return "python3", {}
    hidden = [*hidden, *(project / part for project in {*projects, *filter(None, [project_root()])}
                         for part in ("notebooks", ".git", "book/executed", "_build"))]
    specs = Path(tempfile.mkdtemp(prefix="skinlib-kernels-"))
    name = sandbox.write_kernel_spec(specs, hidden)
    found = os.pathsep.join([str(specs), *filter(None, [os.environ.get("JUPYTER_PATH")])])
    return name, {"JUPYTER_PATH": found}


def needs_review(table: Any) -> list[str]:
    """The students with a question marked not graded (their run failed in the teacher's part, or was stopped)."""
    return sorted(set(table.loc[table["verdict"].str.startswith(NOT_GRADED), "student"]))
