"""Executed chapters as standalone files a student hands in or a teacher marks (nbconvert, Chromium for PDF).

``html`` and ``ipynb`` come from nbconvert; ``pdf`` prints nbconvert's HTML with the
headless Chromium the browser test already uses (``--print-to-pdf``), so no LaTeX
and no browser download is needed.
"""

from __future__ import annotations

import ast
import logging
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from nbconvert import HTMLExporter

from skinlib.book.kernel import markdown_literal
from skinlib.book.notebooks import CHAPTERS, book_root, drop_solutions
from skinlib.io import atomic_write, atomic_write_text

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("html", "ipynb", "pdf")


def chromium() -> str:
    """The headless browser used for PDF, or a ``FileNotFoundError`` saying how to install one."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        exe = shutil.which(name)
        if exe:
            return exe
    raise FileNotFoundError("PDF export prints the HTML with Chromium, which is not installed "
                            "(apt-get install chromium, or export --to html and print it from a browser)")


GLUE_ROLE = re.compile(r"\{glue(?::\w+)?\}`([^`:]+)(?::[^`]*)?`")
XREF_ROLE = re.compile(r"\{(?:doc|ref|numref)\}`(?:([^`<]*?)\s*<([^>]+)>|([^`]+))`")
CITE_ROLE = re.compile(r"\{cite(?::\w+)?\}`([^`]+)`")
ADMONITION = re.compile(r"^:::\{(\w+)\}[ \t]*([^\n]*)\n((?::[\w-]+:[^\n]*\n)*)(.*?)\n:::[ \t]*$", re.M | re.S)


def glued_values(nb: Any) -> dict[str, str]:
    """The values a chapter glued for its prose (``glue_text``), as the book shows them."""
    values = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            name = out.get("metadata", {}).get("scrapbook", {}).get("name")
            text = out.get("data", {}).get("application/papermill.record/text/plain")
            if name and text is not None:
                try:
                    value = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    value = text
                values[name] = str(value)
    return values


def plain_markdown(text: str, glued: dict[str, str]) -> str:
    """MyST-only syntax rewritten for Jupyter/nbconvert: glued values filled in, cross-references as text,
    admonitions as blockquotes, dropdowns as ``<details>`` (still collapsible)."""
    def fill(m: re.Match) -> str:  # as the book shows it: {glue:md} as Markdown whose only markup is code spans
        value = glued.get(m.group(1).strip())
        if value is None:
            return m.group(0)
        return markdown_literal(value) if m.group(0).startswith("{glue:md}") else value

    text = GLUE_ROLE.sub(fill, text)
    text = XREF_ROLE.sub(lambda m: (m.group(1) or m.group(2) or m.group(3)).strip().lstrip("/"), text)
    text = CITE_ROLE.sub(lambda m: f"[{m.group(1)}]", text)

    def admonition(m: re.Match) -> str:
        kind, title, options, body = m.groups()
        title = title.strip() or kind.capitalize()
        if "dropdown" in options:
            return f"<details><summary><b>{title}</b></summary>\n\n{body}\n\n</details>"
        return "\n".join([f"> **{title}**", ">", *(f"> {line}" for line in body.splitlines())])

    return ADMONITION.sub(admonition, text)


def _read(notebook: Path, student: bool) -> Any:
    import nbformat


    nb = nbformat.read(notebook, as_version=4)
    if student:
        drop_solutions(nb)
    glued = glued_values(nb)
    if student:  # a handout's prose must not carry the teacher's numbers: they change when the student runs it
        glued = {name: f"[{name}: computed when you run the chapter]" for name in glued}
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = plain_markdown(cell.source, glued)
        for out in cell.get("outputs", []):  # admonitions a chapter's code displays (profile, data, warnings)
            data = out.get("data", {})
            if "text/markdown" in data:
                text = data["text/markdown"]
                data["text/markdown"] = plain_markdown("".join(text) if isinstance(text, list) else text, glued)
    return nb


def _html(notebook: Path, student: bool = False) -> str:

    nb = _read(notebook, student)
    for cell in nb.cells:  # glued values are records for the book's prose, not outputs a reader sees
        if "outputs" in cell:
            cell.outputs = [o for o in cell.outputs
                            if not all(k.startswith("application/papermill.record") for k in o.get("data", {"": 0}))]
    body, _ = HTMLExporter(embed_images=True).from_notebook_node(nb)
    return body


def export_chapters(chapters: list[str], *, to: str, out: str | os.PathLike,
                    root: str | os.PathLike | None = None, student: bool = False) -> list[Path]:
    """Write each executed chapter (``all`` for every one) as ``<out>/<chapter>.<to>``; return the files.

    ``student`` leaves the solution cells out (hints stay), to hand chapters out as exercises.
    """

    if to not in FORMATS:
        raise ValueError(f"unknown export format {to!r}; valid: {', '.join(FORMATS)}")
    names = list(CHAPTERS) if chapters == ["all"] else chapters
    unknown = [c for c in names if c not in CHAPTERS]
    if unknown:
        raise ValueError(f"unknown chapter(s) {', '.join(unknown)}; valid: all, {', '.join(CHAPTERS)}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the exported chapters (it is created if missing)")
    executed = book_root(root) / "book" / "executed"
    missing = [c for c in names if not (executed / f"{c}.ipynb").is_file()]
    if missing:
        raise FileNotFoundError(f"chapter(s) {', '.join(missing)} not executed yet (no {executed}/<chapter>.ipynb); "
                                f"run `skinlib book` (or `make book`) first")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        source, target = executed / f"{name}.ipynb", out / f"{name}.{to}"
        if to == "ipynb":
            import nbformat

            atomic_write(target, lambda tmp, src=source: nbformat.write(_read(src, student), tmp))
        elif to == "html":
            atomic_write_text(target, _html(source, student))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                page = Path(tmp) / f"{name}.html"
                page.write_text(_html(source, student))
                profile = Path(tmp) / "profile"

                def render(pdf: Path, page: Path = page, profile: Path = profile, name: str = name) -> None:
                    subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                    f"--user-data-dir={profile}", "--no-pdf-header-footer",
                                    f"--print-to-pdf={pdf}", page.as_uri()],
                                   capture_output=True, timeout=180, check=True)
                    if not pdf.is_file() or pdf.stat().st_size == 0:
                        raise RuntimeError(f"Chromium wrote no PDF for {name}")

                atomic_write(target, render)
        log.info("exported %s", target)
        written.append(target)
    return written
