"""The commands the reproduce and teachers pages show, as a reader copies them, and the checks each must pass
(for ``tests/test_documented_commands.py`` and the browser test, which compares them with the rendered pages and
runs the cheap ones for real)."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("book/reproduce.md", "book/teachers.md", "book/developers.md", "README.md")
PROGRAMS = ("skinlib", "make", "papermill", "python3", "pip", "jupyter")
FENCE = re.compile(r"^```(?:bash|console|sh|shell)\n(.*?)^```", re.M | re.S)
SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")


OPERATORS = (">", ">>", "<", "|", "&&", "2>&1")


def _join(words: list[str]) -> str:
    """Words back into one line as a shell reads it (operators left bare, arguments quoted where needed)."""
    return " ".join(w if w in OPERATORS else shlex.quote(w) for w in words)


def block_commands(block: str) -> list[str]:
    """The commands of one shell block: continuation lines joined, comments dropped, here-document bodies (the
    file a command writes) skipped."""
    commands, heredoc = [], None
    for line in block.replace("\\\n", " ").splitlines():
        if heredoc is not None:
            heredoc = None if line.strip() == heredoc else heredoc
            continue
        mark = re.search(r"<<-?'?(\w+)'?", line)
        words = shlex.split(line[:mark.start()] if mark else line, comments=True)
        if not words:
            continue
        commands.append(_join(words))
        heredoc = mark.group(1) if mark else None
    return commands


def documented_commands(text: str) -> list[str]:
    """Every command of a page: each line of its shell blocks, and each inline code span that starts with one of
    :data:`PROGRAMS` and gives an argument (a skinlib span an option: a bare ``skinlib grade run`` in prose names
    a command, it does not run one)."""
    commands = [c for block in FENCE.findall(text) for c in block_commands(block)]
    prose = FENCE.sub("", text)
    for span in SPAN.findall(re.sub(r"\s*\n\s*", " ", prose)):
        words = span.split()
        if words and words[0] in PROGRAMS and len(words) > 1 and (
                words[0] != "skinlib" or any(w.startswith("-") for w in words[1:])):
            commands.append(_join(shlex.split(span)))
    return commands


def page_commands() -> dict[str, list[str]]:
    return {page: documented_commands((ROOT / page).read_text(encoding="utf-8")) for page in PAGES}


STANDARD = ("cat", "git", "tar", "export", "cd", "ls")  # shell builtins and tools every system has


def _unwrap(words: list[str]) -> list[str]:
    """The command a launcher runs: ``.venv/bin/skinlib`` is skinlib, ``nice -n 19 CMD`` and ``torchrun ... -m
    skinlib ARGS`` run CMD and skinlib ARGS, ``sbatch ... --wrap 'CMD'`` runs CMD."""
    if words[0].endswith("/skinlib"):
        return ["skinlib", *words[1:]]
    if words[0] == "nice":
        return _unwrap(words[3:] if words[1] == "-n" else words[1:])
    if words[0] == "torchrun" and "-m" in words:
        return words[words.index("-m") + 1:]
    if words[0] == "sbatch" and "--wrap" in words:
        wrapped = re.sub(r"\$\w+", "0", words[words.index("--wrap") + 1])  # the array index, 0 for the first task
        return _unwrap(shlex.split(wrapped))
    return words


def check_command(command: str) -> None:
    """Raise ``AssertionError`` naming what is wrong with a documented command: a character a shell would not
    read as typed, an unknown program, target, subcommand, option, chapter, profile or parameter value."""
    assert command.isascii(), f"{command!r}: a character a shell reads differently (a dash or quote typographed?)"
    words = shlex.split(command)
    if "&&" in words:
        cut = words.index("&&")
        check_command(_join(words[:cut]))
        check_command(_join(words[cut + 1:]))
        return
    words = _unwrap(words[:next((i for i, w in enumerate(words) if w in OPERATORS), len(words))])
    program = words[0]
    if program == "skinlib":
        _check_skinlib(words[1:])
    elif program == "make":
        done = subprocess.run(["make", "-n", *words[1:]], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, f"{command!r}: {done.stderr.strip()[-300:]}"
    elif program == "papermill":
        _check_papermill(words[1:])
    elif program == "python3":
        assert (ROOT / words[1]).is_file(), f"{command!r}: no file {words[1]} in the repository"
    elif program == "pip":
        from packaging.requirements import Requirement

        target = words[-1]
        assert words[1] == "install", command
        assert (ROOT / target.split("[")[0]).exists() if target.startswith(".") else \
            Requirement(target).name == "skinlib", command
    elif program == "jupyter":
        assert words[1] == "lab", command
    else:
        assert program in STANDARD, f"{command!r}: a program the pages do not introduce"


def _parameters(words: list[str], flag: str = "-p") -> list[tuple[str, str]]:
    return [(words[i + 1], words[i + 2]) for i, w in enumerate(words) if w in (flag, "--param") and i + 2 < len(words)]


def _check_skinlib(argv: list[str]) -> None:
    from skinlib.cli import build_parser
    from skinlib.study.profiles import check_parameter, parse_value

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code == 0:  # --help, --version
            return
        raise AssertionError(f"skinlib {shlex.join(argv)}: skinlib's parser refuses it (exit {exc.code})") from None
    for name, value in _parameters(argv):
        check_parameter(name, parse_value(name, value))
    for chapter in [*(getattr(args, "only", None) or []), getattr(args, "chapter", None)]:
        if chapter and chapter != "all":
            from skinlib.book.notebooks import CHAPTERS

            assert chapter in CHAPTERS, f"skinlib {shlex.join(argv)}: no chapter {chapter}"


def _check_papermill(argv: list[str]) -> None:
    from skinlib.book.kernel import as_parameter
    from skinlib.book.notebooks import notebook_parameters
    from skinlib.study.profiles import PROFILES

    source = ROOT / argv[0]
    assert source.is_file(), f"papermill: no notebook {argv[0]}"
    declared = notebook_parameters(source)
    for name, value in _parameters(argv):
        assert name in declared, f"papermill {argv[0]}: {name} is not a parameter of the chapter"
        if name == "profile":
            assert value in PROFILES, f"papermill: no profile {value}"
        else:
            as_parameter(name, value)
