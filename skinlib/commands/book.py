"""``skinlib book``, ``export``, ``grade`` and ``notebooks``: building the book and teaching with it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from skinlib.commands.options import (
    Shared,
    auto_models,
    positive_float,
    profile_option,
    profile_params,
)


def _book(args: argparse.Namespace) -> int:
    from skinlib.book.build import build_book
    from skinlib.study.parallel import resolve_jobs
    from skinlib.study.profiles import PARAMETERS, get_profile

    params = profile_params(args)
    # the profile's own parameters size --jobs; build_book checks every parameter, the chapters' own included
    profile = get_profile(args.profile, **{k: v for k, v in params.items() if k in PARAMETERS})
    jobs = resolve_jobs(args.jobs, profile.device, params=profile, models=auto_models(args.jobs, profile))
    result = build_book(args.profile, data_dir=args.data_dir, params=params, only=args.only,
                        runs_dir=args.runs_dir, jobs=jobs, from_results=args.from_results or False,
                        student=args.student)
    for name, seconds in result.executed.items():
        print(f"executed {name} in {seconds:.0f} s")
    print(f"runs trained: {len(result.trained)}; finished runs in the store untouched: {len(result.reused)}")
    print(f"book built in {result.build_seconds:.0f} s: {result.html / 'index.html'}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from skinlib.book.export import export_chapters

    for path in export_chapters(args.chapters, to=args.to, out=args.out, student=args.student):
        print(path)
    return 0


def _grade_collect(args: argparse.Namespace) -> int:
    from skinlib.book.submissions import collect

    found = collect(args.source, args.out, chapter=args.chapter)
    for name, path in found.students.items():
        print(f"{found.names[name]}: {path}")
    for rel, why in found.rejected.items():
        print(f"rejected {rel}: {why}")
    print(f"collected {len(found.students)} submissions of {args.chapter} into {args.out}")
    return 0 if found.students else 1


def _grade_run(args: argparse.Namespace) -> int:
    from skinlib.book.grader import grade, needs_review, read_rubric, totals
    from skinlib.book.notebooks import book_root, chapter_defaults
    from skinlib.study.profiles import get_profile

    values = get_profile(args.profile, extra=chapter_defaults(book_root()), **profile_params(args))
    rubric = read_rubric(args.rubric) if args.rubric else None
    table = grade(args.submissions, args.out, chapter=args.chapter, params=values.to_dict(), data_dir=args.data_dir,
                  runs_dir=args.runs_dir, timeout=args.timeout, rubric=rubric, isolation=args.isolation)
    print(table.to_string(index=False))
    print()
    print(totals(table).to_string())
    print(f"\nwrote {Path(args.out) / 'grades.csv'}, {Path(args.out) / 'totals.csv'} and the executed notebooks "
          f"in {Path(args.out) / 'feedback'}")
    review = needs_review(table)
    if review:
        print(f"not graded, to review by hand (the chapter failed in the teacher's cells after their answers): "
              f"{', '.join(review)}")
        return 1
    return 0


def _grade_totals(args: argparse.Namespace) -> int:
    import pandas as pd

    from skinlib.book.grader import BY_HAND, totals
    from skinlib.io import atomic_write_text

    path = Path(args.graded) / "grades.csv"
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} cannot be read ({type(exc).__name__}); give the folder `skinlib grade run` "
                         f"wrote") from None
    if not {"student", "question", "points", "max", "verdict"} <= set(table.columns):
        raise ValueError(f"{path} lacks the columns student, question, points, max, verdict; it is not a grade table")
    over = table[table["points"] > table["max"]]
    if len(over):
        first = over.iloc[0]
        raise ValueError(f"{path}: {first['student']} has {first['points']} of {first['max']} points for "
                         f"{first['question']}; no question gives more than its maximum")
    atomic_write_text(Path(args.graded) / "totals.csv", totals(table).to_csv())
    todo = table[table["points"].isna() & table["verdict"].astype(str).str.startswith(BY_HAND)]
    print(totals(table).to_string())
    print(f"{len(todo)} written answer(s) still to grade by hand" if len(todo) else "every answer has its points")
    return 0


def add_book_commands(sub: Any, shared: Shared) -> None:
    """The book, its exports and coursework grading."""
    data_dir, runs, jobs, profile, fmt = shared.data_dir, shared.runs, shared.jobs, shared.profile, shared.fmt
    p = sub.add_parser("book", parents=[data_dir, runs, profile, jobs],
                       help="execute every chapter for a profile and build the HTML book", **fmt)
    profile_option(p, default="smoke")
    p.add_argument("--only", nargs="+", metavar="CHAPTER", help="re-execute only these chapters")
    p.add_argument("--from-results", nargs="?", const=True, metavar="BUNDLE",
                   help="render a results bundle (default results/<profile>) without training anything")
    p.add_argument("--student", action="store_true",
                   help="student edition: exercises keep their hints, solution cells are left out")
    p.set_defaults(func=_book)

    p = sub.add_parser("export", help="executed chapters as standalone HTML, PDF or notebooks (to hand in or mark)",
                       **fmt)
    p.add_argument("chapters", nargs="+", metavar="CHAPTER", help="chapter names (e.g. 02_baselines) or all")
    p.add_argument("--to", default="html", choices=["html", "ipynb", "pdf"], help="output format")
    p.add_argument("--out", default="exported", help="output folder")
    p.add_argument("--student", action="store_true", help="leave the solution cells out (hints stay)")
    p.set_defaults(func=_export)

    grading = sub.add_parser("grade", help="coursework: collect submissions of a chapter and grade them",
                             **fmt).add_subparsers(dest="action", required=True, metavar="ACTION")
    p = grading.add_parser("collect", help="one notebook per student from a folder of submissions (checked)",
                           **fmt)
    p.add_argument("source", help="the submissions as downloaded: <student>/<file>.ipynb or <student>.ipynb")
    p.add_argument("--chapter", required=True, help="the chapter handed out (e.g. 02_baselines)")
    p.add_argument("--out", default="submissions", help="folder to gather them in (<student>.ipynb)")
    p.set_defaults(func=_grade_collect)
    p = grading.add_parser("run", parents=[data_dir, runs, profile],
                           help="execute each submission's answers in the chapter with papermill and score them",
                           **fmt)
    profile_option(p, default="smoke")
    p.add_argument("submissions", help="folder of <student>.ipynb (from `skinlib grade collect`)")
    p.add_argument("--chapter", required=True, help="the chapter handed out (e.g. 02_baselines)")
    p.add_argument("--out", default="graded", help="folder for grades.csv, totals.csv and feedback/")
    p.add_argument("--timeout", type=positive_float, default=600.0,
                   help="seconds one cell may run; a student's cell over it is stopped and scored")
    p.add_argument("--rubric", metavar="FILE", help="YAML of the written exercises graded by hand "
                                                    "(question: {points: N, criteria: ...}): rows to fill in")
    p.add_argument("--isolation", choices=("auto", "namespace", "none"), default="auto",
                   help="namespace: each student's kernel in Linux namespaces, the teacher's chapters, the "
                        "submissions and the grades out of its reach (an error where the system refuses it); "
                        "auto: where the system allows it, with a warning where not; none: no isolation")
    p.set_defaults(func=_grade_run)
    p = grading.add_parser("totals", help="total each student's points again after grading by hand", **fmt)
    p.add_argument("graded", help="the folder `grade run` wrote (grades.csv with the points filled in)")
    p.set_defaults(func=_grade_totals)
