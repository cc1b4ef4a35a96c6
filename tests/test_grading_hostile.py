"""Students are hostile input: none sets its own or another's score, stops the class's grading, or reads the key
in its feedback; a failure that is not the student's is never scored (skinlib.book.grader)."""
from __future__ import annotations

import math

import nbformat
import pytest

from skinlib.book import sandbox
from skinlib.book.grader import grade, needs_review
from skinlib.book.grading import GradingError
from tests.test_grading import _chapter, _submission

ATTACKS = {
    # rewrites every later classmate's answer cell in the submissions folder it finds on disk
    "ann": ("import glob, json, os\n"
            "for p in glob.glob(os.path.join(os.environ.get('SUBMISSIONS', ''), '*.ipynb')):\n"
            "    if 'zoe' in p:\n"
            "        nb = json.load(open(p))\n"
            "        for c in nb['cells']:\n"
            "            if 'answer' in c['metadata'].get('tags', []):\n"
            "                c['source'] = 'answer_1 = -1'\n"
            "        json.dump(nb, open(p, 'w'))\n"
            "answer_1 = 0"),
    # forges the key and the comparison inside its own kernel, and glues a record of 1000 points
    "ben": ("import skinlib.book.grading as g\n"
            "g.matches = lambda *a, **k: True\n"
            "g.check = lambda *a, **k: True\n"
            "from myst_nb import glue\n"
            "glue('grade-key:1', '{\"expected\": 5, \"points\": 1000, \"tol\": 0, \"solution_ok\": true}',\n"
            "     display=False)\n"
            "answer_1 = 5"),
    # an answer object that claims to equal anything
    "cal": ("class Anything:\n"
            "    def __float__(self): return 12.0\n"
            "    def __eq__(self, other): return True\n"
            "answer_1 = Anything()"),
    "dee": "import os\nos._exit(1)",  # ends its kernel
    "eli": "while True:\n    pass",  # never ends
    "fay": "print('x' * 3_000_000)\nanswer_1 = 6 * scale",  # a huge print, then the right answer
    "zoe": "answer_1 = 6 * scale",  # the victim of ann: hands in the right answer
    # reads the teacher's chapter from disk and runs its solution cells
    "gil": ("import json, os\n"
            "nb = json.load(open(os.environ['CHAPTER']))\n"
            "for c in nb['cells']:\n"
            "    if 'solution' in c['metadata'].get('tags', []):\n"
            "        exec(''.join(c['source']))"),
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The hostile class graded once for the tests that read its grades (each student's run is a kernel)."""
    tmp_path = tmp_path_factory.mktemp("class")
    root = tmp_path / "repo"
    _chapter(root)
    subs = tmp_path / "submissions"
    for name, code in ATTACKS.items():
        _submission(root, subs / f"{name}.ipynb", **{"1": code, "2": 'answer_2 = "nevus"'})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SUBMISSIONS", str(subs))
        patch.setenv("CHAPTER", str(root / "notebooks" / "09_course.ipynb"))
        table = grade(subs, tmp_path / "graded", chapter="09_course", params={"profile": "smoke", "scale": 2},
                      root=root, timeout=5)
    return table, tmp_path / "graded"


@pytest.mark.slow  # a key run and a class of kernels (about 35 s): CI's slow step
def test_no_student_sets_a_score(graded):
    table, out = graded
    got = {(r.student, r.question): (r.points, r.verdict) for r in table.itertuples()}
    assert got[("zoe", "1")] == (3, "right")  # ann rewrote zoe's file after it was read: no effect
    assert got[("ann", "1")] == (0, "wrong")
    assert got[("ben", "1")] == (0, "wrong")  # its patched check and forged key stayed in its own kernel
    assert got[("cal", "1")][0] == 0 and got[("cal", "1")][1].startswith("unreadable answer: the answer is a Anything")
    assert table["points"].max() <= 3 and (table["points"] <= table["max"]).all()
    assert (out / "grades.csv").is_file() and (out / "totals.csv").is_file()
    # the teacher's chapter is an empty folder to a student's kernel: its solutions cannot be read (where the
    # system allows namespaces; elsewhere `auto` grades without them and says so, see the test below)
    if sandbox.unavailable() is None:
        assert got[("gil", "1")][0] == 0 and "FileNotFoundError" in got[("gil", "1")][1], got[("gil", "1")]


def test_isolation_where_refused_is_an_error_or_a_warning(tmp_path, monkeypatch, caplog):
    """Where the system refuses namespaces, --isolation namespace stops before grading anyone, and auto grades
    with a warning that says the solutions are in reach."""
    from skinlib.book import grader

    root = tmp_path / "repo"
    _chapter(root)
    _submission(root, tmp_path / "subs" / "zoe.ipynb", **{"1": ATTACKS["zoe"]})
    monkeypatch.setattr(sandbox, "unavailable", lambda: "unshare refused: Operation not permitted")
    with pytest.raises(GradingError, match="cannot isolate the students' kernels: unshare refused"):
        grader.grade(tmp_path / "subs", tmp_path / "a", chapter="09_course", params={"scale": 2}, root=root,
                     timeout=20, isolation="namespace")
    assert not (tmp_path / "a" / "grades.csv").exists()
    with caplog.at_level("WARNING", logger="skinlib.book.grader"):
        table = grader.grade(tmp_path / "subs", tmp_path / "b", chapter="09_course", params={"scale": 2},
                             root=root, timeout=20, isolation="auto")
    assert "can read the chapter's solutions on disk" in caplog.text and table["points"].iloc[0] == 3


@pytest.mark.slow  # two gradings of a chapter (about 18 s): CI's slow step
@pytest.mark.skipif(sandbox.unavailable() is not None, reason="this system refuses unprivileged user namespaces")
def test_without_isolation_the_solution_on_disk_is_in_reach(tmp_path, monkeypatch):
    """The null of the test above: the same attack with ``isolation="none"`` scores full marks, and with
    ``namespace`` it cannot, while an honest classmate's run is the same either way."""
    root = tmp_path / "repo"
    _chapter(root)
    subs = tmp_path / "submissions"
    for name in ("gil", "zoe"):
        _submission(root, subs / f"{name}.ipynb", **{"1": ATTACKS[name]})
    monkeypatch.setenv("CHAPTER", str(root / "notebooks" / "09_course.ipynb"))
    got = {}
    for isolation in ("none", "namespace"):
        table = grade(subs, tmp_path / isolation, chapter="09_course", params={"profile": "smoke", "scale": 2},
                      root=root, timeout=20, isolation=isolation)
        got[isolation] = {r.student: r.points for r in table.itertuples() if r.question == "1"}
    assert got["none"] == {"gil": 3, "zoe": 3} and got["namespace"] == {"gil": 0, "zoe": 3}


@pytest.mark.slow  # shares the class graded once (a key run and ten kernels, about 40 s): CI's slow step
def test_one_student_never_stops_the_class(graded):
    table, out = graded
    got = {(r.student, r.question): (r.points, r.verdict) for r in table.itertuples()}
    assert got[("dee", "1")][0] == 0 and "the Python kernel died" in got[("dee", "1")][1]
    assert got[("eli", "1")][0] == 0 and "longer than 5 s" in got[("eli", "1")][1]
    assert got[("fay", "1")] == (3, "right") and got[("fay", "2")] == (1, "right")
    assert needs_review(table) == []  # each stopped its own run in its own answer cell: scored, not for review
    assert sorted(p.name for p in (out / "feedback").iterdir()) == sorted(f"{n}.ipynb" for n in ATTACKS)
    fay = (out / "feedback" / "fay.ipynb").read_text()
    assert len(fay) < 1_000_000 and "more characters cut" in fay
    for name in ATTACKS:  # the feedback holds no answer key and no solution
        nb = nbformat.read(out / "feedback" / f"{name}.ipynb", as_version=4)
        assert not any({"grade", "solution"} & set(c.metadata.get("tags", [])) for c in nb.cells)
        assert not any("check(" in c.source or ("grade-key" in str(c.get("outputs", "")) and name != "ben")
                       for c in nb.cells)


def test_a_key_that_cannot_be_computed_grades_nobody(tmp_path):
    """No data, a wrong parameter: the teacher's chapter fails before any student runs, and nobody gets 0."""
    root = tmp_path / "repo"
    nb = _chapter(root)
    nb.cells.insert(1, nbformat.v4.new_code_cell("if scale == 0:\n    raise FileNotFoundError('no data here')"))
    nbformat.write(nb, root / "notebooks" / "09_course.ipynb")
    _submission(root, tmp_path / "subs" / "ada.ipynb", **{"1": "answer_1 = 0"})
    with pytest.raises(GradingError, match=r"answer key could not be computed.*FileNotFoundError: no data here.*"
                                           r"nobody was graded"):
        grade(tmp_path / "subs", tmp_path / "graded", chapter="09_course", params={"scale": 0}, root=root)
    assert not (tmp_path / "graded" / "grades.csv").exists()


def test_a_failure_in_the_teachers_cells_is_not_graded_and_a_changed_chapter_stops_grading(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    _chapter(root)
    monkeypatch.setenv("CHAPTER_FILE", str(root / "notebooks" / "09_course.ipynb"))
    subs = tmp_path / "subs"
    # a teacher's cell between the two answers reads `scale` as a number: a student who rebinds it breaks the
    # teacher's part of the chapter before answer 2 is recorded, which is not graded (not 0) and left for review
    nb = nbformat.read(root / "notebooks" / "09_course.ipynb", as_version=4)
    second = next(i for i, c in enumerate(nb.cells) if c.source == "answer_2 = None")
    nb.cells.insert(second, nbformat.v4.new_code_cell("half = scale / 2"))
    nbformat.write(nb, root / "notebooks" / "09_course.ipynb")
    _submission(root, subs / "amy.ipynb", **{"1": "answer_1 = 6 * scale\nscale = 'x'", "2": "answer_2 = 'nevus'"})
    _submission(root, subs / "max.ipynb", **{"1": "import os\nopen(os.environ['CHAPTER_FILE'], 'a').write(' ')\n"
                                                  "answer_1 = 12"})
    _submission(root, subs / "zed.ipynb", **{"1": "answer_1 = 12"})
    # the fingerprint is the defence where no isolation hides the chapter (isolated, max cannot even see it)
    with pytest.raises(GradingError, match="the grader's files changed while max's submission ran"):
        grade(subs, tmp_path / "graded", chapter="09_course", params={"scale": 2}, root=root, isolation="none")
    import pandas as pd

    table = pd.read_csv(tmp_path / "graded" / "grades.csv")
    amy = table[table["student"] == "amy"].set_index("question")
    assert amy.loc[1, "points"] == 3 and amy.loc[1, "verdict"] == "right"  # recorded before the break
    assert math.isnan(amy.loc[2, "points"]) and amy.loc[2, "verdict"].startswith("not graded: the chapter stopped")
    assert needs_review(table.assign(verdict=table["verdict"].astype(str))) == ["amy", "max", "zed"]
    assert math.isnan(table.set_index("student").loc["max"].set_index("question").loc[1, "points"])
    assert table[table["student"] == "zed"]["verdict"].str.startswith("not graded").all()
    assert table[table["student"] == "zed"]["points"].isna().all()


def test_collection_keeps_every_student_apart_and_names_every_rejection(tmp_path):
    import os

    from skinlib.book.submissions import collect, safe_name

    root = tmp_path / "repo"
    _chapter(root)
    inbox = tmp_path / "inbox"
    for name in ("Zoë Ŝmith", "李雷", "Ann Lee", "Ann_Lee", "x" * 240):
        _submission(root, inbox / name / "handin.ipynb", **{"1": "answer_1 = 6"})
    bad = _submission(root, inbox / "mallory" / "a.ipynb", **{"1": "answer_1 = 6"})
    nb = nbformat.read(bad, as_version=4)
    for cell in nb.cells:  # metadata of the wrong types must not stop the class's collection
        if cell.metadata.get("skinlib"):
            cell.metadata["skinlib"] = {"question": ["1"]}
            cell.metadata["tags"] = 5
    nbformat.write(nb, bad)
    os.mkfifo(inbox / "pipe.ipynb")
    (tmp_path / "elsewhere").mkdir()
    _submission(root, tmp_path / "elsewhere" / "x.ipynb", **{"1": "answer_1 = 6"})
    os.symlink(tmp_path / "elsewhere", inbox / "linked")
    found = collect(inbox, tmp_path / "submissions", chapter="09_course", root=root)
    assert sorted(found.names.values()) == sorted(["Zoë Ŝmith", "李雷", "Ann Lee", "Ann_Lee", "x" * 240])
    assert len(set(found.students)) == 5 and safe_name("李雷") == "李雷" and safe_name("Ann Lee") != "Ann_Lee"
    assert all(len(p.name) < 100 for p in found.students.values())
    assert "none of 09_course's answer cells" in found.rejected["mallory/a.ipynb"]
    assert "not a regular file" in found.rejected["pipe.ipynb"]
    assert "a linked folder" in found.rejected["linked"]
    with pytest.raises(GradingError, match="lies inside the submissions folder"):
        collect(inbox, inbox / "collected", chapter="09_course", root=root)
