"""Coursework: answer cells, hidden checks, collecting and grading submissions (skinlib.book.grading)."""
import copy
import os
from pathlib import Path

import nbformat
import pytest

from skinlib.book.grader import grade, student_notebook
from skinlib.book.grading import GradingError, answers, check, matches
from skinlib.book.submissions import collect

ROOT = Path(__file__).resolve().parents[1]
KERNEL = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}


def _cell(source, tags, question=None):
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = tags
    if question:
        cell.metadata["skinlib"] = {"question": question}
    return cell


def _chapter(root):
    """A small chapter: a papermill parameter, two gradable questions, a solution, hidden grade cells."""
    (root / "notebooks").mkdir(parents=True)
    (root / "_config.yml").write_text("title: t\n")
    nb = nbformat.v4.new_notebook(metadata=KERNEL, cells=[
        _cell('profile = "smoke"\nscale = 1', ["parameters"]),
        nbformat.v4.new_markdown_cell("### Exercises\n\n1. Six times `scale`.\n2. The name of the class `nv`."),
        _cell("answer_1 = None", ["answer"], "1"),
        _cell("answer_1 = 6 * scale", ["solution"]),
        _cell('from skinlib.book.grading import check\ncheck("1", globals().get("answer_1"), 6 * scale, points=3)',
              ["grade", "remove-cell"]),
        _cell("answer_2 = None", ["answer"], "2"),
        _cell('answer_2 = "nevus"', ["solution"]),
        _cell('check("2", globals().get("answer_2"), "Nevus", points=1)', ["grade", "remove-cell"]),
        _cell("secret = 42", []),
    ])
    nbformat.write(nb, root / "notebooks" / "09_course.ipynb")
    return nb


def _submission(root, path, **answer_sources):
    """A student's copy of the student edition with answer cells filled in."""
    from skinlib.book.notebooks import drop_solutions

    nb = nbformat.read(root / "notebooks" / "09_course.ipynb", as_version=4)
    drop_solutions(nb)
    for cell in nb.cells:
        q = cell.metadata.get("skinlib", {}).get("question")
        if q in answer_sources:
            cell.source = answer_sources[q]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def test_answers_match_with_a_tolerance_and_the_answer_key_is_checked(monkeypatch):
    assert matches((0.2351, 0.56), (0.23529, 0.5596), tol=0.005) and not matches((0.3, 0.56), (0.235, 0.56), tol=0.005)
    assert matches(" Nevus ", "nevus") and not matches(None, 3) and not matches("x", 3) and not matches([1], (1, 2))
    assert matches(176075, 176075) and not matches(float("nan"), 1.0, tol=1)
    monkeypatch.delenv("SKINLIB_GRADING", raising=False)
    with pytest.raises(AssertionError, match=r"exercise 1: the solution's answer 5 .* fix the answer key"):
        check("1", 5, 6, points=3)  # in the book a grade cell checks the solution: a wrong key fails the build


def test_the_student_edition_has_no_grade_cells_and_a_submission_changes_only_answers(tmp_path):
    from skinlib.book.notebooks import drop_solutions

    source = _chapter(tmp_path / "repo")
    student = copy.deepcopy(source)
    assert drop_solutions(student) == 4  # two solutions, two grade cells
    assert all(not {"grade", "solution"} & set(c.metadata.get("tags", [])) for c in student.cells)
    student.cells[-1].source = "secret = 0  # a student edits a cell that is not an answer"
    next(c for c in student.cells if "answer_1 = None" in c.source).source = "answer_1 = 6 * scale"
    graded, absent = student_notebook(source, student)
    assert absent == [] and graded.cells[-1].source == "secret = 42"  # the teacher's cells, not the student's
    answer = next(c for c in graded.cells if c.source == "answer_1 = 6 * scale")  # the student's code as written
    assert "raises-exception" in answer.metadata["tags"]
    assert sum("record_answer('1', globals().get('answer_1'))" in c.source for c in graded.cells) == 1
    assert not any("check(" in c.source or "solution" in c.metadata.get("tags", []) for c in graded.cells)


def test_two_submissions_are_collected_and_graded(tmp_path):
    """One right, one wrong (and one whose answer crashes, one without answer cells, hostile files): the grade
    table gives each question its points, with the chapter executed at the parameters given."""
    root = tmp_path / "repo"
    _chapter(root)
    inbox = tmp_path / "inbox"
    _submission(root, inbox / "ada" / "09_course.ipynb", **{"1": "answer_1 = 6 * scale", "2": 'answer_2 = "NEVUS"'})
    _submission(root, inbox / "bob" / "handin.ipynb", **{"1": "answer_1 = 6", "2": 'answer_2 = "melanoma"'})
    _submission(root, inbox / "cy.ipynb", **{"1": "answer_1 = 1 / 0"})
    (inbox / "eve").mkdir()
    (inbox / "eve" / "x.ipynb").write_text("not json")
    os.symlink(inbox / "ada" / "09_course.ipynb", inbox / "mallory.ipynb")
    other = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(1)")])
    nbformat.write(other, inbox / "dan.ipynb")

    found = collect(inbox, tmp_path / "submissions", chapter="09_course", root=root)
    assert sorted(found.students) == ["ada", "bob", "cy"]
    assert "a link" in found.rejected["mallory.ipynb"] and "not a readable notebook" in found.rejected["eve/x.ipynb"]
    assert "none of 09_course's answer cells" in found.rejected["dan.ipynb"]
    assert sorted(p.name for p in (tmp_path / "submissions").iterdir()) == ["ada.ipynb", "bob.ipynb", "cy.ipynb"]

    table = grade(tmp_path / "submissions", tmp_path / "graded", chapter="09_course",
                  params={"profile": "smoke", "scale": 2}, root=root)
    got = {(r.student, r.question): (r.points, r.max, r.verdict) for r in table.itertuples()}
    assert got[("ada", "1")] == (3, 3, "right") and got[("ada", "2")] == (1, 1, "right")  # 6 * scale at scale 2
    assert got[("bob", "1")] == (0, 3, "wrong") and got[("bob", "2")] == (0, 1, "wrong")  # 6 is right at scale 1
    assert got[("cy", "1")] == (0, 3, "error in the answer cell: ZeroDivisionError: division by zero")
    assert got[("cy", "2")] == (0, 1, "no answer")
    feedback = (tmp_path / "graded" / "feedback" / "cy.ipynb").read_text()
    assert "ZeroDivisionError" in feedback and "check(" not in feedback and "Feedback for cy" in feedback
    totals = (tmp_path / "graded" / "totals.csv").read_text().splitlines()
    assert totals == ["student,points,max", "ada,4.0,4.0", "bob,0.0,4.0", "cy,0.0,4.0"] or \
        totals == ["student,points,max", "ada,4,4", "bob,0,4", "cy,0,4"]
    assert sorted(p.name for p in (tmp_path / "graded" / "feedback").iterdir()) == \
        ["ada.ipynb", "bob.ipynb", "cy.ipynb"]


def test_grading_refuses_what_it_cannot_grade(tmp_path):
    root = tmp_path / "repo"
    _chapter(root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(GradingError, match=r"no submissions .* `skinlib grade collect`"):
        grade(tmp_path / "empty", tmp_path / "graded", chapter="09_course", params={}, root=root)
    with pytest.raises(GradingError, match="does not exist"):
        collect(tmp_path / "nowhere", tmp_path / "s", chapter="09_course", root=root)
    from skinlib.book.notebooks import BookError

    with pytest.raises(BookError, match="chapters: 01_data"):
        collect(tmp_path / "empty", tmp_path / "s", chapter="99_nothing", root=root)


@pytest.mark.parametrize("chapter", ["02_baselines", "04_attention", "07_efficiency"])
def test_each_gradable_exercise_has_an_answer_a_solution_and_a_hidden_check(chapter, monkeypatch):
    """The answer key of every gradable exercise earns full points: the answer cell, the solution and the grade
    cell of the real chapter, run in order (the book runs them too)."""
    _run_answer_keys(chapter, {}, monkeypatch)


@pytest.mark.usefixtures("data_dir")
def test_the_data_chapters_answer_key_earns_full_points(monkeypatch):
    """01.1 is graded on the real split at seed 3, so it needs the data."""
    from skinlib import data
    from skinlib.book.claims import split_miss_verdict

    index = data.load_ham10000()
    _run_answer_keys("01_data", {"data": data, "index": index, "common": index["dx"].value_counts().index[:3],
                                 "split_miss_verdict": split_miss_verdict}, monkeypatch)


def _run_answer_keys(chapter: str, namespace: dict, monkeypatch) -> None:
    from skinlib.book import show_table
    from skinlib.book.grading import GRADE_TAG

    monkeypatch.delenv("SKINLIB_GRADING", raising=False)
    nb = nbformat.read(ROOT / "notebooks" / f"{chapter}.ipynb", as_version=4)
    questions = answers(nb)
    assert questions and all(f"answer_{q.replace('.', '_')} = None" in src for q, src in questions.items())
    grades = [c for c in nb.cells if GRADE_TAG in c.metadata.get("tags", [])]
    assert len(grades) == len(questions) and all("remove-cell" in c.metadata["tags"] for c in grades)
    namespace = {**namespace, "glue_text": lambda **values: None, "show_table": show_table}
    for cell in nb.cells:
        tags = set(cell.metadata.get("tags", []))
        if cell.cell_type == "code" and tags & {"answer", "solution", GRADE_TAG}:
            exec(cell.source, namespace)  # a grade cell raises when the solution's answer is wrong
    assert all(namespace[f"answer_{q.replace('.', '_')}"] is not None for q in questions)


def test_written_answers_get_rubric_rows_graded_by_hand(tmp_path, capsys):
    """A rubric adds, per student, one row per written exercise (points empty, its criteria as the verdict); the
    teacher fills the points in and `skinlib grade totals` adds them up, refusing more than the maximum."""
    import pandas as pd

    from skinlib.book.grader import read_rubric
    from skinlib.cli import main

    root = tmp_path / "repo"
    _chapter(root)
    _submission(root, tmp_path / "subs" / "ada.ipynb", **{"1": "answer_1 = 6 * scale"})
    (tmp_path / "rubric.yaml").write_text('"3": {points: 2, criteria: "names the class mix as the confound"}\n')
    rubric = read_rubric(tmp_path / "rubric.yaml")
    table = grade(tmp_path / "subs", tmp_path / "graded", chapter="09_course", params={"scale": 1}, root=root,
                  rubric=rubric)
    written = table[table["question"] == "3"].iloc[0]
    assert pd.isna(written["points"]) and written["max"] == 2 and written["verdict"].startswith("by hand: names")
    grades = pd.read_csv(tmp_path / "graded" / "grades.csv", dtype={"question": str})
    grades.loc[grades["question"] == "3", "points"] = 1.5
    grades.to_csv(tmp_path / "graded" / "grades.csv", index=False)
    assert main(["grade", "totals", str(tmp_path / "graded")]) == 0
    assert "ada,4.5,6.0" in (tmp_path / "graded" / "totals.csv").read_text()  # 3 right + 1.5 by hand, of 3+1+2
    grades.loc[grades["question"] == "3", "points"] = 5
    grades.to_csv(tmp_path / "graded" / "grades.csv", index=False)
    assert main(["grade", "totals", str(tmp_path / "graded")]) == 2
    assert "no question gives more than its maximum" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text('"3": {points: "two"}\n')
    with pytest.raises(GradingError, match="needs points"):
        read_rubric(tmp_path / "bad.yaml")
    (tmp_path / "clash.yaml").write_text('"1": {points: 2, criteria: "x"}\n')
    with pytest.raises(GradingError, match="which the chapter grades itself"):
        grade(tmp_path / "subs", tmp_path / "g2", chapter="09_course", params={}, root=root,
              rubric=read_rubric(tmp_path / "clash.yaml"))
