"""Executed chapters as standalone files a student hands in or a teacher marks (nbconvert, Chromium for PDF).

``html`` and ``ipynb`` come from nbconvert; ``pdf`` prints nbconvert's HTML with the
headless Chromium the browser test already uses (``--print-to-pdf``), so no LaTeX
and no browser download is needed.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

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


def _html(notebook: Path) -> str:
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:  # glued values are records for the book's prose, not outputs a reader sees
        if "outputs" in cell:
            cell.outputs = [o for o in cell.outputs
                            if not all(k.startswith("application/papermill.record") for k in o.get("data", {"": 0}))]
    body, _ = HTMLExporter(embed_images=True).from_notebook_node(nb)
    return body


def export_chapters(chapters: list[str], *, to: str, out: str | os.PathLike,
                    root: str | os.PathLike | None = None) -> list[Path]:
    """Write each executed chapter (``all`` for every one) as ``<out>/<chapter>.<to>``; return the files."""
    from skinlib.book import CHAPTERS, book_root

    if to not in FORMATS:
        raise ValueError(f"unknown export format {to!r}; valid: {', '.join(FORMATS)}")
    names = list(CHAPTERS) if chapters == ["all"] else chapters
    unknown = [c for c in names if c not in CHAPTERS]
    if unknown:
        raise ValueError(f"unknown chapter(s) {', '.join(unknown)}; valid: all, {', '.join(CHAPTERS)}")
    executed = book_root(root) / "book" / "executed"
    missing = [c for c in names if not (executed / f"{c}.ipynb").is_file()]
    if missing:
        raise FileNotFoundError(f"chapter(s) {', '.join(missing)} not executed yet (no {executed}/<chapter>.ipynb); "
                                f"run `skinlib book` (or `make book`) first")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        source, target = executed / f"{name}.ipynb", out / f"{name}.{to}"
        if to == "ipynb":
            atomic_write(target, lambda tmp, src=source: shutil.copyfile(src, tmp))
        elif to == "html":
            atomic_write_text(target, _html(source))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                page = Path(tmp) / f"{name}.html"
                page.write_text(_html(source))
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
