"""Exercises whose answer is a command or a number, checked by running what their solutions say."""

from __future__ import annotations

import shlex
from pathlib import Path

import nbformat

from skinlib import cli
from skinlib.study import experiments
from skinlib.study.profiles import get_profile

ROOT = Path(__file__).resolve().parents[1]


def _solution_code(chapter: str, needle: str) -> str:
    nb = nbformat.read(ROOT / "notebooks" / f"{chapter}.ipynb", as_version=4)
    [cell] = [c for c in nb.cells if c.cell_type == "code" and "solution" in c.metadata.get("tags", [])
              and needle in c.source]
    return cell.source


def test_the_losses_exercise_command_makes_exactly_the_variant():
    """05.1: the printed `skinlib train` command, parsed as the shell and the CLI parse it, is the study's CE run
    with only the loss changed (no other value differs, so its validation bacc is comparable)."""
    config = experiments.profile_config(get_profile("smoke"))
    study = experiments.loss_study(config, [0])
    exercise = experiments.variant(study.configs["CE"], loss="0.5*cb+0.5*focal(gamma=1)")
    command = cli.train_command(exercise)
    argv = shlex.split(command)
    assert argv[:2] == ["skinlib", "train"] and "–" not in command and "’" not in command
    parsed = cli.config_from_args(cli.build_parser().parse_args(argv[1:]))
    assert parsed.replace(name=exercise.name, progress=exercise.progress) == exercise, (parsed, exercise)
    assert "_solution" not in command and "cell" not in _solution_code("05_losses", "train_command")


def test_temperature_scaling_keeps_every_prediction(capsys):
    """06.2: the solution cell itself, run: dividing logits by T > 0 never changes a prediction."""
    exec(_solution_code("06_final_model", "logits / t"), {})
    out = capsys.readouterr().out
    assert out.count("predictions unchanged: True") == 3 and "False" not in out


def test_the_weights_commands_of_exercise_03_1_run(capsys, tmp_path, monkeypatch):
    """03.1: `skinlib weights where mobilenet_v3_small` runs offline and names a folder; `weights fetch` parses."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert cli.main(["weights", "where", "mobilenet_v3_small"]) == 0
    assert str(tmp_path) in capsys.readouterr().out
    args = cli.build_parser().parse_args(["weights", "fetch", "mobilenet_v3_small"])
    assert args.command == "weights"


CHECKED_BY_TESTS = {
    "05.1": test_the_losses_exercise_command_makes_exactly_the_variant,
    "06.2": test_temperature_scaling_keeps_every_prediction,
    "03.1": test_the_weights_commands_of_exercise_03_1_run,
}


def test_at_least_eight_exercises_are_checked():
    """Grade cells and the tests above together check at least eight exercises, none twice."""
    from skinlib.book.grading import GRADE_TAG, answers

    graded = [q for path in sorted((ROOT / "notebooks").glob("*.ipynb"))
              for q in answers(nbformat.read(path, as_version=4))]
    cells = sum(GRADE_TAG in c.metadata.get("tags", []) for path in sorted((ROOT / "notebooks").glob("*.ipynb"))
                for c in nbformat.read(path, as_version=4).cells)
    assert cells == len(graded) and not set(graded) & set(CHECKED_BY_TESTS)
    assert len(graded) + len(CHECKED_BY_TESTS) >= 8, (graded, list(CHECKED_BY_TESTS))
