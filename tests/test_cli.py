"""The command line: one ``error:`` line for every expected failure, checked before any work starts."""

from __future__ import annotations

import argparse
import re

import pytest

import skinlib.book.build as book
import skinlib.book.execute as execute
import skinlib.data.selection as selection
import skinlib.train as train
from skinlib import cli
from skinlib.commands.train import flag
from skinlib.runs import OPTIMIZERS, RunFileError
from skinlib.study.profiles import parse_value


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if data is read or a chapter executed: every error below must come first."""

    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the input was checked")

    monkeypatch.setattr(selection, "load_ham10000", forbidden)
    monkeypatch.setattr(execute, "execute_chapter", forbidden)


def run_cli(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.err


@pytest.mark.parametrize(("text", "expected"), [
    ("lr: 1e-3\n", r"lr must be a number, got '1e-3' \(str\) \(YAML reads 1e-3 as a string"),
    ('image_size: "32"\n', r"image_size must be an integer, got '32'"),
    ("epochs: 1.5\n", r"epochs must be an integer, got 1.5"),
    ("- 1\n- 2\n", r"must be a mapping of RunConfig fields.*got a list"),
    ("lr: [1\n", r"is not valid YAML"),
    ("subset: 0\n", r"subset must be a fraction in \(0, 1\]"),
    ("batch_size: 1\n", r"batch_size must be at least 2 \(BatchNorm"),
    ("modle: resnet18\n", r"unknown RunConfig field\(s\) \['modle'\]"),
])
def test_bad_config_files_give_one_error_line(tmp_path, capsys, no_work, text, expected):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    code, err = run_cli(["train", "--config", str(path)], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: ") and "Traceback" not in err
    assert re.search(expected, err), err


@pytest.mark.parametrize("argv", [["train", "--subset", "0"], ["train", "--subset", "1.5"],
                                  ["data", "split", "--subset", "0", "--out", "x.csv"]])
def test_subset_zero_is_rejected(capsys, no_work, argv):
    code, err = run_cli(argv, capsys)
    assert code == 2 and "subset must be a fraction in (0, 1]" in err


@pytest.mark.parametrize(("argv", "expected"), [
    (["book", "-p", "epoch", "16"], "unknown parameter 'epoch'; valid: batch_scaling, batch_size, bn_momentum"),
    (["book", "-p", "epochs", "1.5"], "parameter epochs must be an integer, got 1.5"),
    (["book", "-p", "latency_runs", "many"], "parameter latency_runs must be an integer"),
    (["book", "-p", "bn_momentum", "maybe"], "bn_momentum must be a number in (0, 1] or 'default'"),
    (["study", "baselines", "-p", "epoch", "16"], "unknown parameter 'epoch'"),
    (["study", "baselines", "-p", "lr", "fast"], "parameter lr must be a number"),
    (["study", "baselines", "-p", "seeds", "[0, a]"], "parameter seeds must be a list of integers"),
])
def test_book_and_study_parameters_are_checked_first(capsys, no_work, argv, expected):
    code, err = run_cli(argv, capsys)
    assert code == 2 and expected in err, err


def test_minus_p_reads_numbers_as_papermill_does():
    """`skinlib ... -p lr 1e-3` and `papermill ... -p lr 1e-3` mean the same value (YAML 1.1 alone reads a
    string); lists and booleans keep their YAML reading."""
    assert parse_value("lr", "1e-3") == pytest.approx(0.001) and parse_value("epochs", "16") == 16
    assert parse_value("seeds", "[0, 1]") == [0, 1] and parse_value("pretrained", "false") is False
    assert parse_value("sampler", "balanced") == "balanced"


def test_a_chapter_parameter_can_be_overridden(monkeypatch, capsys):
    seen = {}

    def fake_build(profile, **kwargs):
        seen.update(kwargs["params"])
        raise book.BookError("stop here")

    monkeypatch.setattr(book, "build_book", fake_build)
    code, err = run_cli(["book", "-p", "latency_runs", "5", "-p", "lr", "1.0e-3"], capsys)
    assert code == 1 and seen == {"latency_runs": 5, "lr": 0.001} and "stop here" in err


@pytest.mark.parametrize(("exc", "code", "expected"), [
    (FloatingPointError("training loss became nan"), 1, "training diverged: training loss became nan"),
    (PermissionError(13, "Permission denied", "/ro/runs/x"), 1, "permission denied: /ro/runs/x. Choose a writable"),
    (RunFileError("checkpoint /r/last.pt is corrupt; pass --force"), 2, "checkpoint /r/last.pt is corrupt"),
    (KeyboardInterrupt(), 130, "interrupted. Finished epochs are kept"),
    (OSError("<urlopen error [Errno -3] Temporary failure in name resolution>"), 1, "urlopen error"),
])
def test_expected_failures_print_no_traceback(monkeypatch, capsys, exc, code, expected):
    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(train, "fit", fail)
    got, err = run_cli(["train", "--epochs", "1"], capsys)
    assert got == code and expected in err and "Traceback" not in err
    got, err = run_cli(["-v", "train", "--epochs", "1"], capsys)
    assert got == code and "Traceback" in err  # -v still shows it


def test_a_data_dir_that_is_a_file_is_named(tmp_path, capsys):
    f = tmp_path / "HAM10000_metadata.csv"
    f.write_text("lesion_id,image_id,dx\n")
    code, err = run_cli(["data", "verify", "--data-dir", str(f)], capsys)
    assert code == 2 and "is a file, not a folder" in err and str(tmp_path) in err


def _all_actions(parser: argparse.ArgumentParser):
    for action in parser._actions:
        yield parser.prog, action
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _all_actions(sub)


def test_every_option_has_help_and_registries_give_the_choices():
    from skinlib.study.experiments import STUDIES
    from skinlib.study.profiles import PROFILES

    parser = cli.build_parser()
    missing = [f"{prog} {a.dest}" for prog, a in _all_actions(parser)
               if not isinstance(a, argparse._SubParsersAction) and not a.help]
    assert not missing
    actions = {(prog, a.dest): a for prog, a in _all_actions(parser)}
    assert list(actions[("skinlib study", "name")].choices) == list(STUDIES)
    assert list(actions[("skinlib book", "profile")].choices) == list(PROFILES)
    assert list(actions[("skinlib train", "optimizer")].choices) == list(OPTIMIZERS)


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0
    from skinlib import __version__

    assert capsys.readouterr().out.strip() == f"skinlib {__version__}"


def test_train_flags_come_from_one_table_with_runconfigs_defaults():
    """Each value flag of `skinlib train` sets the RunConfig field of its name and states that field's default
    as RunConfig declares it; the parser, config_from_args and train_command read the same table."""
    import dataclasses

    from skinlib import cli
    from skinlib.runs import RunConfig

    defaults = {f.name: f.default for f in dataclasses.fields(RunConfig)}
    [train] = [a for a in cli.build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "train"]
    actions = {a.dest: a for a in train[1]._actions}
    for field, spec in cli.train_fields().items():
        assert field in defaults, f"--{field} sets no RunConfig field"
        action = actions[field]
        assert action.option_strings == [flag(field)]
        assert action.help.endswith(f"default {spec.get('default_text', defaults[field])}"), action.help
    args = cli.build_parser().parse_args(["train", "--image-size", "96", "--lr", "0.01", "--sampler", "balanced"])
    config = cli.config_from_args(args)
    assert (config.image_size, config.lr, config.sampler, config.epochs) == (96, 0.01, "balanced", defaults["epochs"])
    assert "--image-size 96" in cli.train_command(config) and "--lr 0.01" in cli.train_command(config)
