"""Grading a class of ten with three hostile students, without and with isolation, on a real chapter.

Seven honest students (five right, two wrong) and three hostile ones hand in exercise 02.2 of
``02_baselines`` (two balanced accuracies of a given confusion matrix, 2 points):

- *mallory* looks for submissions folders under every process's command line and working folder (``/proc``) and
  under ``/tmp``, and rewrites every later classmate's answer cell to a wrong answer;
- *trudy* reads the teacher's chapter from the repository and runs its solution cells;
- *loop* never ends (``while True``).

The class is graded twice (``skinlib.book.grader.grade``): with ``isolation="none"`` and with ``"namespace"``.
The table shows each student's points both ways and each pass's time. Needs the HAM10000 data (the key run
executes the chapter at tiny settings) and Linux.

    python benchmarks/grading_class.py --out /tmp/class --timeout 60
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import time
from pathlib import Path

import nbformat

from skinlib.book.grader import grade
from skinlib.book.notebooks import book_root, drop_solutions

CHAPTER = "02_baselines"
RIGHT = ("from skinlib.evaluate import per_class_rates\n"
         "rates = per_class_rates(cm)\n"
         "answer_02_2 = (rates['sensitivity'].mean(), ((rates['sensitivity'] + rates['specificity']) / 2).mean())")
MALLORY = (  # folders from every process's command line and working folder, and /tmp; then every submissions
    # folder under them: every later classmate's answer rewritten to a wrong one
    "import glob, json, os\n"
    "places = {'/tmp'}\n"
    "for pid in glob.glob('/proc/[0-9]*'):\n"
    "    try:\n"
    "        places.add(os.readlink(pid + '/cwd'))\n"
    "        places.update(a for a in open(pid + '/cmdline', 'rb').read().decode().split('\\0') if os.path.isdir(a))\n"
    "    except OSError:\n"
    "        continue\n"
    "for place in places:\n"
    "    for path in glob.glob(os.path.join(place, '**', 'submissions', '*.ipynb'), recursive=True):\n"
    "        if os.path.basename(path) > 'mallory':\n"
    "            nb = json.load(open(path))\n"
    "            for c in nb['cells']:\n"
    "                if 'answer' in c['metadata'].get('tags', []):\n"
    "                    c['source'] = 'answer_02_2 = (0.0, 0.0)'\n"
    "            json.dump(nb, open(path, 'w'))\n"
    "answer_02_2 = (0.0, 0.0)")
TRUDY = (  # the teacher's chapter from the checkout skinlib runs from, its solution cells run here
    "import json, pathlib, skinlib\n"
    "chapter = pathlib.Path(skinlib.__file__).resolve().parents[1] / 'notebooks' / '02_baselines.ipynb'\n"
    "for c in json.load(open(chapter))['cells']:\n"
    "    if 'solution' in c['metadata'].get('tags', []) and 'answer_02_2' in ''.join(c['source']):\n"
    "        exec(''.join(c['source']))")
CLASS = {"ada": RIGHT, "bob": RIGHT, "cem": RIGHT, "dan": "answer_02_2 = (0.5, 0.7)", "loop": "while True:\n    pass",
         "mallory": MALLORY, "trudy": TRUDY, "una": RIGHT, "vic": RIGHT, "wes": "answer_02_2 = (0.2, 0.3)"}
ATTACK = {"mallory": "rewrites later classmates' submissions", "trudy": "reads the solutions on disk",
          "loop": "never ends"}


def hand_in(source: Path, folder: Path) -> None:
    """Each student's copy of the student edition with exercise 02.2's answer cell filled in."""
    folder.mkdir(parents=True)
    for student, code in CLASS.items():
        nb = nbformat.read(source, as_version=4)
        drop_solutions(nb)
        for cell in nb.cells:
            if cell.metadata.get("skinlib", {}).get("question") == "02.2":  # the given matrix stays, the answer
                cell.source = cell.source.replace("answer_02_2 = None", code)  # line becomes the student's code
        nbformat.write(nb, folder / f"{student}.ipynb")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="scratch folder (emptied first)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds one cell may run")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    params = {"profile": "smoke", "epochs": 1, "subset": 0.05, "seeds": [0], "n_boot": 20}
    points, seconds, rewritten, per_student = {}, {}, {}, {}
    timings: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: timings.append(record.getMessage())  # the grader logs each student's time
    logging.getLogger("skinlib.book.grader").addHandler(handler)
    logging.getLogger("skinlib.book.grader").setLevel(logging.INFO)
    for isolation in ("none", "namespace"):
        timings.clear()
        subs = args.out / isolation / "submissions"
        hand_in(book_root() / "notebooks" / f"{CHAPTER}.ipynb", subs)
        start = time.perf_counter()
        table = grade(subs, args.out / isolation / "graded", chapter=CHAPTER, params=params,
                      runs_dir=args.out / "runs", timeout=args.timeout, isolation=isolation)
        seconds[isolation] = time.perf_counter() - start
        per_student[isolation] = [float(m.group(1)) for t in timings if (m := re.search(r"graded \S+ in (\d+) s", t))]
        points[isolation] = {r.student: (r.points, r.verdict) for r in table.itertuples() if r.question == "02.2"}
        rewritten[isolation] = sorted(p.stem for p in subs.glob("*.ipynb") if p.stem != "mallory"
                                      and "answer_02_2 = (0.0, 0.0)" in p.read_text())
    print("| student | attack | points, no isolation | points, namespaces | verdict with namespaces |")
    print("| --- | --- | --- | --- | --- |")
    for student in CLASS:
        before, after = points["none"][student], points["namespace"][student]
        print(f"| {student} | {ATTACK.get(student, 'honest')} | {before[0]:g} of 2 | {after[0]:g} of 2 | "
              f"{after[1][:70]} |")
    for isolation in ("none", "namespace"):
        print(f"\nsubmissions mallory rewrote on disk ({isolation}): {', '.join(rewritten[isolation]) or 'none'}")
    print(f"\ngrading time (key run and ten students): no isolation {seconds['none']:.0f} s (its key run trains "
          f"the chapter's runs), namespaces {seconds['namespace']:.0f} s (they are reused)")
    for isolation in ("none", "namespace"):
        times = sorted(per_student[isolation])
        print(f"per student ({isolation}): median {times[len(times) // 2]:.0f} s, the ten together {sum(times):.0f} s "
              f"(the endless one stopped at --timeout)")


if __name__ == "__main__":
    main()
