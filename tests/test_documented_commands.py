"""Every command on the reproduce, teachers and developer pages and in the README is one a reader can paste:
plain characters, and skinlib's parser, make (dry run) and the chapters' parameters cells accept it as written."""

from __future__ import annotations

import pytest

from tests.documented import block_commands, check_command, documented_commands, page_commands

COMMANDS = [(page, c) for page, commands in page_commands().items() for c in commands]


def test_the_pages_document_commands_of_every_kind():
    programs = {c.split()[0] for _, c in COMMANDS}
    assert {"skinlib", "make", "papermill", "pip"} <= programs
    assert len(COMMANDS) >= 40


@pytest.mark.parametrize("page,command", COMMANDS, ids=[f"{p.split('/')[-1]}:{c[:60]}" for p, c in COMMANDS])
def test_every_documented_command_is_accepted_as_written(page, command):
    check_command(command)


def test_the_checks_catch_what_a_reader_would_hit():
    for wrong in ("skinlib book --profile smoke \u2013p epochs 3",  # an en dash from a typographer
                  "skinlib book --profile nano",  # no such profile
                  "skinlib book --profile smoke -p epoch 3",  # no such parameter
                  "skinlib book --only 09_extra",  # no such chapter
                  "make bok",  # no such target
                  "papermill notebooks/02_baselines.ipynb out.ipynb -p epoch 3",
                  "python3 benchmarks/nothing.py"):
        with pytest.raises((AssertionError, ValueError)):
            check_command(wrong)


def test_blocks_are_read_as_a_shell_reads_them():
    block = ("make book   # a comment\nskinlib grade run a/ \\\n  --chapter 02_baselines\n"
             "cat > r.yaml <<'YAML'\n\"06.2\": {points: 2}\nYAML\nskinlib grade totals g/\n")
    assert block_commands(block) == ["make book", "skinlib grade run a/ --chapter 02_baselines",
                                     "cat > r.yaml", "skinlib grade totals g/"]
    text = "Run `skinlib data verify --dataset isic` or `skinlib book` first.\n\n```bash\nmake help\n```\n"
    assert documented_commands(text) == ["make help", "skinlib data verify --dataset isic"]
