"""What runs inside a chapter's kernel: :func:`chapter` resolves its profile and data, and the notes,
glued values and admonitions a page shows."""

from __future__ import annotations

import ast
import difflib
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from skinlib.book.figures import TABLES
from skinlib.data import fingerprint, load_ham10000
from skinlib.data.paths import project_root
from skinlib.data.snapshot import LICENCE, is_snapshot
from skinlib.models.weights import expected_weights_file, weights_available
from skinlib.runs.workspace import Workspace
from skinlib.study.experiments import profile_config, run_study
from skinlib.study.profiles import (
    PARAMETERS,
    PROFILES,
    SUMMARIES,
    Profile,
    check_parameter,
    comparable_with_paper,
    get_profile,
    parse_value,
)

log = logging.getLogger(__name__)


def _values_line(values: dict[str, Any]) -> str:
    return ", ".join(f"`{k}` = `{json.dumps(v)}`" for k, v in values.items())


def profile_note(profile: str, used: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None) -> Any:
    """The admonition heading every chapter: the profile, the values actually used, and whether the
    numbers may be set against the paper's (IPython Markdown)."""
    from IPython.display import Markdown

    used, overrides = used or {}, overrides or {}
    values = f"\n\nValues used: {_values_line(used)}." if used else ""
    changed = (f"\n\nChanged from the profile: {_values_line(overrides)}; the numbers below come from "
               "these values, not from the profile's.") if overrides else ""
    if comparable_with_paper(profile) and not overrides:
        return Markdown(f":::{{note}}\nBuilt with the `{profile}` profile: full data, the paper's scale."
                        f"{values}\n:::")
    if comparable_with_paper(profile):
        return Markdown(f":::{{warning}}\nBuilt with the `{profile}` profile **with changes**, so not at the "
                        f"paper's scale.{values}{changed}\n:::")
    return Markdown(
        f":::{{warning}}\nBuilt with the **`{profile}` profile**: {SUMMARIES.get(profile, 'a custom profile')}. "
        f"Run `skinlib book --profile paper` on a GPU for the paper's scale.{values}{changed}\n:::")


@dataclass(frozen=True)
class Chapter:
    """What a chapter notebook works with: the whole resolved profile (the caller's overrides applied), its
    folders resolved once, and the parameters the chapter declares. A profile parameter reads as an attribute
    (``ctx.seeds``)."""

    values: Profile
    workspace: Workspace
    shown: tuple[str, ...] = ()  # the parameters the chapter declares (those its page lists)

    def __getattr__(self, name: str) -> Any:
        if name in PARAMETERS:
            return getattr(self.values, name)
        raise AttributeError(f"chapter has no parameter {name!r}; it has {', '.join(PARAMETERS)}")

    @property
    def profile(self) -> str:
        return self.values.name

    @property
    def overrides(self) -> dict[str, Any]:
        """The parameters that differ from the named profile's."""
        return self.values.overrides

    @property
    def data(self) -> Path | None:
        """The folder the chapter reads its images and tables from (the HAM10000 data, or a results bundle's data
        summary); ``None`` where there is neither."""
        return self.workspace.data

    @property
    def config(self) -> Any:
        """The base :class:`~skinlib.runs.RunConfig` of the chapter's runs."""
        return profile_config(self.values)

    def study(self, name: str) -> Any:
        """One of the book's studies (:data:`skinlib.study.plan.PLAN`) at this chapter's profile and folders,
        trained or reused: ``ctx.study("attention")``."""
        return run_study(name, self.config, self.seeds, pretrained=self.pretrained, workspace=self.workspace)


def chapter(namespace: Mapping[str, Any] | None = None, *, profile: str | None = None, data_dir: str | None = "",
            runs_dir: str | None = "", show: bool = True, **params: Any) -> Chapter:
    """Start a chapter notebook: resolve the profile, apply the parameters the caller set, quiet the logs.

    ``chapter(globals())`` reads the notebook's parameters cell: ``profile``, the folders and
    every profile parameter (:data:`~skinlib.study.profiles.PARAMETERS`) it declares; keyword
    arguments name them one by one instead (and win over the namespace). A parameter left
    ``None`` takes the profile's value, so ``papermill ... -p profile paper`` runs at the
    paper's scale. Unknown names and values of the wrong type raise ``ValueError``. The
    heading admonition (``show``) states the profile and every value used.
    """
    if namespace is not None:
        check_injected(namespace)
        params = {**{k: as_parameter(k, namespace[k]) for k in PARAMETERS if k in namespace}, **params}
        profile = profile if profile is not None else namespace.get("profile")
        data_dir = data_dir or namespace.get("data_dir", "")
        runs_dir = runs_dir or namespace.get("runs_dir", "")
    if profile is None:
        raise ValueError(f"chapter() needs a profile; valid: {', '.join(PROFILES)}")
    logging.basicConfig(level=logging.WARNING, force=True)
    pd.set_option("display.max_colwidth", None)  # a table's text cells whole, never cut to "stratified by..."
    values = get_profile(profile, **{k: v for k, v in params.items() if v is not None})
    used = {k: getattr(values, k) for k in params}
    # the runs come from the whole resolved profile: a parameter the chapter forgot to declare takes the profile's
    # value (as the build's pre-training does), never the RunConfig default
    workspace = Workspace.resolve(data_dir=data_dir or None, runs_dir=runs_dir or None)
    ctx = Chapter(values, workspace, shown=tuple(used))
    if show:
        from IPython.display import display

        display(profile_note(profile, used, values.overrides))
        try:  # the data's notes read the index once
            index = load_ham10000(workspace.data)
        except (FileNotFoundError, ValueError):
            index = None
        if index is not None:
            for note in (data_note(index), size_note(values.image_size, index)):
                if note is not None:
                    display(note)
    return ctx


def as_parameter(name: str, value: Any) -> Any:
    """A profile parameter's value as papermill may pass it: ``-p pretrained true`` arrives as the string
    ``"true"``, ``-p seeds "[0, 1]"`` as a string too. A string the parameter cannot take is parsed the way
    ``skinlib book -p`` parses it (:func:`~skinlib.study.profiles.parse_value`), so both dialects mean the same."""
    if not isinstance(value, str):
        return value
    try:
        check_parameter(name, value)
        return value
    except ValueError:
        return parse_value(name, value)


PARAMETERS_HEADER = "# Parameters"  # the first line of the cell papermill injects


def check_injected(namespace: Mapping[str, Any]) -> None:
    """Refuse a parameter papermill injected that the notebook does not declare (``-p epoch 3``: papermill only
    warns, and the chapter would run on defaults). Reads the cells executed so far (IPython's ``In``): the
    declared names from the ``parameters`` cell, the given ones from papermill's ``# Parameters`` cell."""
    cells = [c for c in namespace.get("In", []) if isinstance(c, str)]
    injected = next((c for c in cells if c.lstrip().startswith(PARAMETERS_HEADER)), None)
    declared = next((c for c in cells if "profile: str =" in c and c is not injected), None)
    if injected is None or declared is None:
        return

    def names(source: str) -> set[str]:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            return set()
        out = set()
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
                if isinstance(node, ast.AnnAssign) else []
            out |= {t.id for t in targets if isinstance(t, ast.Name)}
        return out

    known = names(declared)
    unknown = sorted(names(injected) - known)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown parameter {unknown[0]!r} for this chapter{hint}; it declares: "
                         f"{', '.join(sorted(known))}")


def size_note(image_size: int, index: Any) -> Any | None:
    """When the profile trains at a larger size than the data's images (of ``index``) have, the warning that says
    the models saw them upsampled (with both sizes); else ``None``."""
    present = next((p for p in index["path"] if os.path.isfile(p)), None)
    if present is None:
        return None
    with Image.open(present) as im:
        width, height = im.size
    if image_size <= max(width, height):
        return None
    return admonition("warning", "Images upsampled",
                      f"The data's images are {width}x{height} pixels, and this profile trains at {image_size}x"
                      f"{image_size}: the models see them upsampled, with no detail beyond the source's. The numbers "
                      f"on this page are those of upsampled images (the HAM10000 originals are 600x450).")


def data_note(index: Any) -> Any | None:
    """When ``index`` comes from a results bundle's data summary (no images here), the admonition that says so,
    with the data key the runs were checked against and the data's licence; else ``None``."""
    if not is_snapshot(Path(index.attrs.get("source", "")).parent):
        return None
    return admonition(
        "note", "Data from the results bundle",
        f"The tables and images on this page come from the results bundle's data summary, not from the HAM10000 "
        f"images themselves: the metadata of all {len(index):,} images with the SHA-256 of each image file "
        f"(data key `{fingerprint(index).key}`; every run's own data key was checked against it) and the few "
        f"images drawn here. HAM10000 and the ISIC 2018 test set are licensed by their authors under {LICENCE} "
        f"(non-commercial use, with attribution; see {{doc}}`01_data`).")


MARKDOWN_SPECIAL = re.compile(r"([\\*_\[\]<>#|~$!{}])")
CODE_SPAN = re.compile(r"(`[^`\n]+`)")


def markdown_literal(text: str) -> str:
    """``text`` as Markdown that shows every character as typed, except `code spans`, which stay code: the
    markup characters outside them are escaped (``0.5*cb`` stays ``0.5*cb``, never emphasis)."""
    parts = CODE_SPAN.split(text)
    return "".join(part if i % 2 else MARKDOWN_SPECIAL.sub(r"\\\1", part) for i, part in enumerate(parts))


class GluedText(str):
    """A glued value: the string itself for ``{glue:text}`` (its ``text/plain``), and as Markdown for
    ``{glue:md}`` (:func:`markdown_literal`: code spans, such as commands and metric names, render as code)."""

    def _repr_markdown_(self) -> str:
        return markdown_literal(str(self))


_SHOWN: dict[str, int] = {}  # tables shown so far per chapter, in this kernel


@dataclass(frozen=True)
class Table:
    """A result table with its number and caption, rendered above it in the book and in Jupyter."""

    frame: Any  # a pandas DataFrame
    number: str
    caption: str

    def _repr_html_(self) -> str:
        html = self.frame.to_html(classes="skinlib-table", na_rep="–", border=0)
        title = f"<caption><span class=\"caption-number\">Table {self.number} </span>{escape(self.caption)}</caption>"
        return re.sub(r"(<table[^>]*>)", lambda m: m.group(1) + title, html, count=1)

    def __repr__(self) -> str:
        return f"Table {self.number}. {self.caption}\n{self.frame.to_string(na_rep='–')}"


def show_table(frame: Any, key: str, **fill: Any) -> Table:
    """Show ``frame`` as the next numbered table of its chapter (``key`` is ``"NN.name"``, its caption
    :data:`skinlib.book.figures.TABLES` ``[key]`` with ``fill`` in its fields)."""
    if key not in TABLES:
        raise ValueError(f"table {key!r} has no caption in skinlib.book.figures.TABLES; add one (keys: "
                         f"'chapter number.name', e.g. {next(iter(TABLES))!r})")
    chapter = key.split(".", 1)[0]
    _SHOWN[chapter] = _SHOWN.get(chapter, 0) + 1
    return Table(frame, f"{int(chapter)}.{_SHOWN[chapter]}", TABLES[key].format(**fill))


def show(section: Any, key: str, **fill: Any) -> Table:
    """Glue a section's words and show its table as the next numbered table of the chapter (a
    :class:`~skinlib.book.sections.Section`, as the functions of :mod:`skinlib.book.sections` return it)."""
    glue_text(**section.words)
    return show_table(section.table, key, **fill)


def glue_text(**values: Any) -> None:
    """Glue each value, formatted as a string, for ``{glue:md}`` (and ``{glue:text}``) references in the
    chapter's prose (:class:`GluedText`)."""
    from myst_nb import glue

    for key, value in values.items():
        glue(key, GluedText(str(value)), display=False)


def public_path(path: str | os.PathLike) -> str:
    """A path as a published page may show it: ``~/...`` under the home folder, relative inside the
    repository, else only its name (no machine's folders in the book)."""
    path = Path(path).expanduser().resolve()
    root = project_root()
    if root is not None and path.is_relative_to(root):
        return str(path.relative_to(root))
    home = Path.home().resolve()
    if path.is_relative_to(home):
        return str(Path("~") / path.relative_to(home))
    return path.name


def admonition(kind: str, title: str, text: str) -> Any:
    """A MyST admonition (``note``, ``warning``, ...) as notebook output."""
    from IPython.display import Markdown

    return Markdown(f":::{{{kind}}} {title}\n{text}\n:::")


def weights_note(models: Mapping[str, str], *, consequence: str) -> Any | None:
    """A warning naming, for ``models`` (label: registered name), the ImageNet weight files missing on this
    machine, where each is expected and how to fetch it, then ``consequence``; ``None`` when all are present."""
    missing = {label: m for label, m in models.items() if not weights_available(m)}
    if not missing:
        return None
    files = ", ".join(f"`{public_path(expected_weights_file(m))}`" for m in missing.values())
    fetch = ", ".join(f"`skinlib weights fetch {m}`" for m in missing.values())
    return admonition("warning", f"No ImageNet weights for {', '.join(missing)}",
                      f"Missing: {files}. Fetch them on a connected machine ({fetch}) and copy them to the "
                      f"machine that builds the book. {consequence}")


def use_weights(models: Mapping[str, str], *, wanted: bool = True, consequence: str) -> bool:
    """Whether ``models`` (label: registered name) start from ImageNet weights: ``wanted`` and every weight file
    present. Where they are wanted and a file is missing, the page shows :func:`weights_note`."""
    from IPython.display import display

    note = weights_note(models, consequence=consequence) if wanted else None
    if note is not None:
        display(note)
    return wanted and note is None


def show_frame(frame: Any) -> None:
    """Display a table that may be absent (``None``): an optional measurement shows nothing when not made."""
    from IPython.display import display

    if frame is not None:
        display(frame)
