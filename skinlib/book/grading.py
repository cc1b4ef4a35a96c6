"""Coursework, the cell model: answer cells students fill in, hidden grade cells that state the answer key.

A gradable exercise has three kinds of cells in the chapter's notebook:

- an *answer* cell (tag ``answer``; ``metadata.skinlib.question``) that students fill in, e.g.
  ``answer_02_2 = None``;
- the teacher's *solution* cells (tag ``solution``), left out of every student artefact;
- a *grade* cell (tags ``grade`` and ``remove-cell``) that computes the expected value itself and calls
  :func:`check` with the question's points.

:func:`check` does one of two things. In the book (no :data:`GRADING_ENV`) it runs on the teacher's solution and
fails the build when the answer key is wrong. While grading (:mod:`skinlib.book.grader`) it runs only in the
*key run*, the teacher's chapter executed once without any student code, where it records the expected value,
the points and the tolerance. Student code never runs beside a grade cell: a student's kernel only records
each answer as plain data (:func:`record_answer`), and the grader compares it with the key outside that kernel,
so no student object, patched function or forged record can set a score.

Collecting submissions is :mod:`skinlib.book.submissions`; executing and scoring them, :mod:`skinlib.book.grader`.
"""
from __future__ import annotations

import json
import math
import os
import re
from typing import Any

import numpy as np

ANSWER_TAG = "answer"
GRADE_TAG = "grade"
GRADING_ENV = "SKINLIB_GRADING"  # "key" in the key run, "answers" in a student's run; unset in the book
KEY_PREFIX = "grade-key:"  # glue name of the key run's record of one question
ANSWER_PREFIX = "grade-answer:"  # glue name of a student run's record of one answer
QUESTION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,19}$")
MAX_TEXT = 10_000  # characters of a recorded string answer
MAX_ITEMS = 10_000  # items of a recorded sequence answer


class GradingError(ValueError):
    """A submission or a grading request that cannot be graded as given."""


def grading_mode() -> str:
    """``"key"``, ``"answers"``, or ``""`` (the book)."""
    return os.environ.get(GRADING_ENV, "")


def matches(answer: Any, expected: Any, *, tol: float = 0.0) -> bool:
    """Whether ``answer`` equals ``expected``: numbers within ``tol`` (absolute), sequences element by element,
    strings ignoring case and surrounding blanks."""
    if isinstance(expected, bool) or expected is None:
        return answer is expected or answer == expected
    if isinstance(expected, (int, float)):
        if isinstance(answer, bool) or not isinstance(answer, (int, float)):
            try:
                answer = float(answer)
            except (TypeError, ValueError):
                return False
        return math.isfinite(float(answer)) and abs(float(answer) - float(expected)) <= tol
    if isinstance(expected, str):
        return isinstance(answer, str) and answer.strip().lower() == expected.strip().lower()
    if isinstance(expected, (list, tuple)):
        if isinstance(answer, (str, bytes)) or not hasattr(answer, "__iter__"):
            return False
        items = list(answer)
        return len(items) == len(expected) and all(matches(a, e, tol=tol) for a, e in zip(items, expected))
    return bool(answer == expected)


_SCALARS = (type(None), bool, int, float, str)


def plain(value: Any, *, depth: int = 0) -> Any:
    """``value`` as plain JSON data (None, bool, int, float, str, lists of them), reading only built-in and NumPy
    types by their exact type, never a method a student could define; anything else raises ``TypeError``."""
    kind = type(value)
    if kind in _SCALARS:
        return value[:MAX_TEXT] if kind is str else value
    if depth > 3:
        raise TypeError("nested more than 3 levels")
    if kind in (list, tuple):
        return [plain(v, depth=depth + 1) for v in value[:MAX_ITEMS]]

    if kind in (np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8, np.uint8, np.bool_):
        return np.ndarray.item(np.asarray(value))
    if kind is np.ndarray:
        return plain(np.ndarray.tolist(value.reshape(-1)[:MAX_ITEMS]) if value.ndim != 1 else
                     np.ndarray.tolist(value[:MAX_ITEMS]), depth=depth + 1)
    raise TypeError(f"a {kind.__name__}")


def _glue(name: str, record: dict[str, Any]) -> None:
    from myst_nb import glue

    glue(name, json.dumps(record), display=False)


def check(question: str, answer: Any, expected: Any, *, points: float, tol: float = 0.0) -> bool:
    """A grade cell's check of one answer against the key it computed. In the book a wrong answer is a wrong
    answer key and raises; in the key run (:func:`grading_mode` ``"key"``) the key is recorded for the grader."""
    ok = matches(answer, expected, tol=tol)
    mode = grading_mode()
    if mode == "key":
        try:
            key = plain(expected)
        except TypeError as exc:
            raise GradingError(f"exercise {question}: the grade cell's expected value is {exc}, not plain data "
                               f"(numbers, strings, lists); make it one") from None
        _glue(KEY_PREFIX + question, {"expected": key, "points": float(points), "tol": float(tol),
                                      "solution_ok": bool(ok)})
        return ok
    if not mode and not ok:
        raise AssertionError(f"exercise {question}: the solution's answer {answer!r} does not match the "
                             f"grade cell's expected {expected!r} (tolerance {tol}); fix the answer key")
    return ok


def record_answer(question: str, answer: Any) -> None:
    """In a student's run: record one answer as plain data for the grader (or why it cannot be read)."""
    try:
        record = {"value": plain(answer)}
    except TypeError as exc:
        record = {"unreadable": f"the answer is {exc}; answer with numbers, strings or lists of them"}
    _glue(ANSWER_PREFIX + question, record)


def tags_of(cell: Any) -> list[str]:
    """A cell's tags; metadata of the wrong type (a hand-edited submission) counts as none."""
    metadata = cell.get("metadata")
    tags = metadata.get("tags") if isinstance(metadata, dict) else None
    return [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []


def question_of(cell: Any) -> str | None:
    """The exercise an answer cell belongs to (``metadata.skinlib.question``), or None when the cell is not a
    well-formed answer cell."""
    if ANSWER_TAG not in tags_of(cell) or cell.get("cell_type") != "code":
        return None
    meta = cell.get("metadata", {}).get("skinlib")
    question = meta.get("question") if isinstance(meta, dict) else None
    return question if isinstance(question, str) and QUESTION.match(question) else None


def answers(nb: Any) -> dict[str, str]:
    """The source of each answer cell of a notebook, by question (the first cell of a question counts)."""
    out: dict[str, str] = {}
    for cell in nb.cells:
        question = question_of(cell)
        source = cell.get("source")
        if question is not None and question not in out and isinstance(source, str):
            out[question] = source
    return out
