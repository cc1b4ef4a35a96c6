"""Sphinx extension for the book: launch buttons open the clean source notebook.

The book's pages are the executed copies in ``book/executed/`` (never committed),
so sphinx-book-theme's Binder and Colab buttons would point at files the repository
does not hold. This rewrites those links to ``notebooks/<chapter>.ipynb``, whose first
code cell installs skinlib and fetches the data when they are missing.
Enabled in ``_config.yml`` (``sphinx.extra_extensions``).
"""

from __future__ import annotations

import re
from typing import Any

EXECUTED = "book/executed/"
SOURCE = "notebooks/"


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
            out["url"] = url
        return out
    return buttons


def built_commit() -> str:
    """The full commit the book is built from, or ``""`` when it is unknown or has uncommitted changes (a link
    to it would lead nowhere)."""
    from skinlib.study.bundle_format import git_commit

    commit = git_commit(full=True)
    return commit if re.fullmatch(r"[0-9a-f]{40}", commit) else ""


def _rewrite(app: Any, pagename: str, templatename: str, context: dict[str, Any], doctree: Any) -> None:
    if pagename.startswith(EXECUTED) and "header_buttons" in context:
        branch = str((app.config.html_theme_options or {}).get("repository_branch", "main"))
        if not hasattr(app, "_skinlib_commit"):
            app._skinlib_commit = built_commit()
        context["header_buttons"] = source_links(context["header_buttons"], branch=branch,
                                                 commit=app._skinlib_commit)


def _require_executed_chapters(app: Any) -> None:
    """Stop a build that would publish a book without chapters: ``jupyter-book build .`` renders only what
    ``skinlib book`` has executed into ``book/executed/``."""
    from pathlib import Path

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
    return {"parallel_read_safe": True, "parallel_write_safe": True}
