"""Sphinx extension for the book: launch buttons open the clean source notebook of the page's own commit.

The book's pages are the executed copies in ``book/executed/`` (never committed),
so sphinx-book-theme's Binder and Colab buttons would point at files the repository
does not hold. This rewrites those links to ``notebooks/<chapter>.ipynb`` at the commit the book is built from.
Binder builds that commit's environment (``binder/postBuild`` installs it). Colab installs skinlib in the chapter's
install cell, whose line names a branch in the committed notebook (a file cannot name its own commit), so the
build writes a copy of every chapter with the line pinned to the commit into the site (``_launch/``), and the
Colab button opens that copy from the published branch (:data:`PAGES_BRANCH`).
Enabled in ``_config.yml`` (``sphinx.extra_extensions``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from skinlib.book.cells import pinned_install, repository_setting
from skinlib.study.bundle_format import git_commit

EXECUTED = "book/executed/"
SOURCE = "notebooks/"
LAUNCH = "_launch"  # the site's folder of chapters pinned to the built commit (what the Colab button opens)
PAGES_BRANCH = "gh-pages"  # the branch the site is published on (`make publish` and the workflow push it)
COLAB = "https://colab.research.google.com/github/"


def source_links(buttons: Any, *, branch: str = "", commit: str = "") -> Any:
    """``buttons`` (the theme's nested lists/dicts) with every launch URL (absolute) moved from the executed copy
    to the source, and, given the ``commit`` the book was built from, from ``branch`` to that commit (Binder then
    builds, and Colab opens, the very code of the page); relative links (the executed notebook's download) stay."""
    if isinstance(buttons, list):
        return [source_links(b, branch=branch, commit=commit) for b in buttons]
    if isinstance(buttons, dict):
        out = {k: source_links(v, branch=branch, commit=commit) for k, v in buttons.items()}
        url = out.get("url")
        if isinstance(url, str) and url.startswith(("http://", "https://")):  # not the download of the executed page
            url = url.replace(EXECUTED, SOURCE)
            if branch and commit and SOURCE in url:
                url = url.replace(f"/blob/{branch}/", f"/blob/{commit}/").replace(f"/{branch}?", f"/{commit}?")
                if url.startswith(COLAB):  # the copy whose install line installs this very commit
                    url = re.sub(rf"/blob/{commit}/{SOURCE}", f"/blob/{PAGES_BRANCH}/{LAUNCH}/", url)
            out["url"] = url
        return out
    return buttons


def built_commit(root: Path | None = None) -> str:
    """The full commit of the checkout the book is built from (``root``, the book's source folder; by default the
    one skinlib runs from), or ``""`` when it is unknown or has uncommitted changes (a link to it would lead
    nowhere)."""
    commit = git_commit(full=True, root=root)
    return commit if re.fullmatch(r"[0-9a-f]{40}", commit) else ""


def _rewrite(app: Any, pagename: str, templatename: str, context: dict[str, Any], doctree: Any) -> None:
    if pagename.startswith(EXECUTED) and "header_buttons" in context:
        branch = str((app.config.html_theme_options or {}).get("repository_branch", "main"))
        if not hasattr(app, "_skinlib_commit"):
            app._skinlib_commit = built_commit(Path(app.srcdir))
        context["header_buttons"] = source_links(context["header_buttons"], branch=branch,
                                                 commit=app._skinlib_commit)


def write_launch_copies(root: Path, out: Path, commit: str) -> list[Path]:
    """Every chapter of ``root/notebooks`` copied to ``out/_launch`` with its install line pinned to ``commit``
    (the notebooks the Colab buttons open); nothing without a commit (the buttons then keep the branch)."""
    if not commit:
        return []
    url, _ = repository_setting(root)
    folder = out / LAUNCH
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sorted((root / SOURCE).glob("*.ipynb")):
        target = folder / source.name
        target.write_text(pinned_install(source.read_text(encoding="utf-8"), url, commit), encoding="utf-8")
        written.append(target)
    return written


def _launch_copies(app: Any, exception: Exception | None) -> None:
    if exception is None and app.builder.format == "html":
        commit = getattr(app, "_skinlib_commit", None)
        write_launch_copies(Path(app.srcdir), Path(app.outdir), built_commit(Path(app.srcdir)) if commit is None
                            else commit)


def _require_executed_chapters(app: Any) -> None:
    """Stop a build that would publish a book without chapters: ``jupyter-book build .`` renders only what
    ``skinlib book`` has executed into ``book/executed/``."""
    from sphinx.errors import ExtensionError

    executed = Path(app.srcdir) / EXECUTED
    if not any(executed.glob("*.ipynb")):
        raise ExtensionError(
            f"no executed chapters in {executed}: the chapters are notebooks that `skinlib book --profile smoke` "
            "(or `make book`) executes with papermill before it runs Jupyter Book; run that instead of "
            "`jupyter-book build .`, or `skinlib book --profile PROFILE --from-results` to render a results bundle")


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", _require_executed_chapters)
    app.connect("html-page-context", _rewrite, priority=502)  # after the theme adds its buttons (501)
    app.connect("build-finished", _launch_copies)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
