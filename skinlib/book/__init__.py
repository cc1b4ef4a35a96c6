"""The book: chapter notebooks executed with papermill and compiled by Jupyter Book.

A chapter's kernel needs only the names below (``from skinlib.book import chapter, glue_text``) and the
sections that show a table with its words (:mod:`skinlib.book.sections`); the build driver is
:mod:`skinlib.book.build`.
"""

from skinlib.book.kernel import (
    admonition,
    chapter,
    glue_text,
    public_path,
    show,
    show_frame,
    show_table,
    use_weights,
    weights_note,
)

__all__ = ["admonition", "chapter", "glue_text", "public_path", "show", "show_frame", "show_table", "use_weights",
           "weights_note"]
