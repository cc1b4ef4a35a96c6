"""Render a chapter from a partial results bundle: every output whose runs are bundled, a note in place of each
that is not.

A cell that stops with ``MissingRunError`` (it needs a run the bundle lacks) is not executed again; a note takes
its place. The names it would have defined are *tainted*, and so is every later cell that reads one (and what
that cell defines): those cells become notes too, without being run. Everything else runs as usual, and any
other error still fails the build. Prose that refers to a value one of the replaced cells would have glued says
so in place of the value.
"""
from __future__ import annotations

import ast
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from skinlib.book.export import GLUE_ROLE

log = logging.getLogger(__name__)

NOTE_TAG = "missing-runs"  # the tag of every cell this module puts in a chapter
ABSENT = "*(not in the bundle)*"  # what prose shows in place of a value a replaced cell would have glued


def _defined(tree: ast.AST) -> set[str]:
    def base(node: ast.AST) -> str | None:
        while isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred)):
            node = node.value
        return node.id if isinstance(node, ast.Name) else None

    defined: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            defined.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined.update(imported(node))
        elif isinstance(node, (ast.Attribute, ast.Subscript)) and isinstance(node.ctx, (ast.Store, ast.Del)):
            name = base(node)
            if name is not None:
                defined.add(name)  # ``table.loc[k] = v`` changes ``table``
    return defined


def imported(tree: ast.AST) -> set[str]:
    """The names the import statements in ``tree`` bind."""
    return {(a.asname or a.name).split(".")[0] for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom)) for a in node.names}


def names(source: str) -> tuple[set[str], set[str]]:
    """The names a cell's code defines (assigns, imports, mutates through an attribute or an item) and the
    names it reads from earlier cells: read by a statement before any earlier statement of the cell defined
    them (loop, comprehension and ``with`` variables are the statement's own)."""
    tree = ast.parse(source)
    read: set[str] = set()
    before: set[str] = set()
    for statement in tree.body:
        own = {n.id for node in ast.walk(statement)
               if isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension, ast.withitem))
               for target in [getattr(node, "target", None) or getattr(node, "optional_vars", None)]
               if target is not None for n in ast.walk(target) if isinstance(n, ast.Name)}
        loads = {n.id for n in ast.walk(statement) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        read |= loads - before - own
        before |= _defined(statement)
    return before, read


@dataclass
class Gaps:
    """What a chapter of a partial bundle cannot show: cells that need a missing run, by cell id, with the
    error's first line, and the cells that build on them."""

    needs_run: dict[str, str] = field(default_factory=dict)
    follows: set[str] = field(default_factory=set)
    tainted: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.needs_run)

    def plan(self, cells: Iterable[Any]) -> None:
        """Walk the code cells in order: taint what a replaced cell defines, replace each cell that reads a
        tainted name."""
        self.follows, self.tainted = set(), set()
        available: set[str] = set()  # defined by the cells that run
        for cell in cells:
            if cell.cell_type != "code":
                continue
            defined, read = names(cell.source)
            if cell.id in self.needs_run or read & self.tainted:
                if cell.id not in self.needs_run:
                    self.follows.add(cell.id)
                # what it would have defined is absent or stale, except a module an earlier cell imported too
                self.tainted |= defined - (imported(ast.parse(cell.source)) & available)
            else:
                available |= defined
                self.tainted -= defined  # defined afresh

    def skipped(self, cell_id: str) -> bool:
        return cell_id in self.needs_run or cell_id in self.follows


def error_cell(nb: Any) -> Any | None:
    """The cell of an executed notebook that holds the error papermill stopped on."""
    for cell in nb.cells:
        if cell.cell_type == "code" and any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            return cell
    return None


def record(gaps: Gaps, nb: Any, ename: str, evalue: str) -> bool:
    """Add the failed cell of ``nb`` (an executed notebook) to ``gaps`` when it failed for want of a run, or
    for a name a replaced cell would have defined; ``False`` when the error is anything else."""
    cell = error_cell(nb)
    if cell is None or gaps.skipped(cell.id):
        return False
    if ename == "MissingRunError":
        gaps.needs_run[cell.id] = evalue.splitlines()[0] if evalue else "a run the bundle lacks"
        return True
    name = re.match(r"name '([^']+)' is not defined", evalue or "")
    if ename == "NameError" and name and name.group(1) in gaps.tainted:
        gaps.follows.add(cell.id)
        return True
    return False


def _run_name(message: str) -> str | None:
    found = re.search(r"run (\S+) is needed", message)
    return found.group(1) if found else None


def apply(nb: Any, gaps: Gaps, *, profile: str, missing: list[str]) -> Any:
    """``nb`` with each skipped cell replaced by a note, and a note after the chapter's first text naming what
    the bundle lacks and the command that makes it."""
    import nbformat

    gaps.plan(nb.cells)
    cells = []
    for cell in nb.cells:
        if cell.cell_type == "code" and gaps.skipped(cell.id):
            if cell.id in gaps.needs_run:
                run = _run_name(gaps.needs_run[cell.id])
                why = f"it needs run `{run}`, which" if run else "it needs a run that"
            else:
                why = "it builds on an output above that needs a run which"
            note = nbformat.v4.new_markdown_cell(
                f":::{{note}} Not shown: {why} the `{profile}` results bundle does not hold yet\n"
                f"See the note at the top of this chapter for the runs missing and the command that makes them.\n"
                f":::")
            note.metadata["tags"] = [NOTE_TAG]
            cells.append(note)
        else:
            cells.append(cell)
    first_text = next((i for i, c in enumerate(cells) if c.cell_type == "markdown"), -1)
    cells.insert(first_text + 1, _summary(profile, missing))
    out = nbformat.from_dict(dict(nb))
    out.cells = cells
    return out


def _summary(profile: str, missing: list[str]) -> Any:
    import nbformat

    listed = "".join(f"\n- `{m}`" for m in missing) if missing else " (not known)"
    cell = nbformat.v4.new_markdown_cell(
        f":::{{admonition}} Part of this chapter is not in the `{profile}` results bundle yet\n:class: warning\n"
        f"The bundle was made in a training window that did not finish every run. What its runs allow is shown "
        f"below; each table or figure that needs one of the others is replaced by a note.\n\n"
        f"Runs of the profile still missing from the bundle:{listed}\n\n"
        f"Make them where there is time: on a GPU, `python3 benchmarks/gpu_window.py run OUT` "
        f"(`skinlib results window --profile {profile}`), which goes on from this bundle; then unpack its "
        f"archive into `results/` and render again.\n:::")
    cell.metadata["tags"] = [NOTE_TAG]
    return cell


def blank_absent_values(nb: Any, glued: Iterable[str]) -> int:
    """Replace, in the prose of an executed chapter, each reference to a value that was not glued (a replaced
    cell would have glued it) by :data:`ABSENT`; return how many."""

    known = set(glued)
    count = 0

    def swap(match: re.Match) -> str:
        nonlocal count
        if match.group(1).strip() in known:
            return match.group(0)
        count += 1
        return ABSENT

    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = GLUE_ROLE.sub(swap, cell.source)
    if count:
        log.info("%d values in the prose are not in the bundle", count)
    return count
