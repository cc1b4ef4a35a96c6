"""The publishing workflow (``.github/workflows/book.yml``) as data, for the tests that read it."""

from __future__ import annotations

from pathlib import Path

import yaml

WORKFLOW = Path(__file__).resolve().parents[1] / ".github" / "workflows" / "book.yml"


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def build_command() -> str:
    """The workflow's book-building command (the book test runs it on a fresh clone)."""
    steps = workflow()["jobs"]["build"]["steps"]
    return next(s["run"] for s in steps if "run" in s and s["run"].startswith("make book "))
