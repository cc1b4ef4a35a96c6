"""The book's studies: canonical run names, tables computed from runs, and the validation-only choice."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from skinlib import paper
from skinlib.data import CLASSES
from skinlib.runs import ABSENT_ROW, Run, RunConfig, predictions_frame
from skinlib.runs.workspace import Workspace
from skinlib.study import experiments, studies, tables
from skinlib.study.experiments import choose_joint_loss, run_name, variant


def test_run_names_are_canonical_and_say_what_differs():
    base = RunConfig()
    assert run_name(base) == "mobilenet_v3_small"
    assert run_name(base.replace(model="resnet18", pretrained=True)) == "resnet18-pre"
    joint = run_name(base.replace(loss="0.7*focal(gamma=1)+0.3*ls"))
    assert joint == "mobilenet_v3_small-loss_0_7_focal_gamma_1__0_3_ls"
    assert run_name(base.replace(sampler="balanced", split="image")) == "mobilenet_v3_small-balanced-image_split"
    # the same configuration reached from two chapters is the same run
    assert variant(base, model="resnet18") == variant(base.replace(name="x"), model="resnet18")


def fake_run(root: Path, name: str, *, val_bacc: float, probs: np.ndarray, y: np.ndarray, seed: int = 0) -> Run:
    """A finished run folder written by hand: config, predictions and metrics."""
    from skinlib.evaluate import classification_metrics

    folder = root / f"{name}-{seed}"
    folder.mkdir(parents=True)
    config = RunConfig(name=name, seed=seed)
    (folder / "config.yaml").write_text(yaml.safe_dump(config.to_dict()))
    n = len(y)
    index = pd.DataFrame({"image_id": [f"I{i}" for i in range(n)], "lesion_id": [f"L{i // 2}" for i in range(n)],
                          "dx": [CLASSES[k] for k in y], "label": y})
    predictions_frame(index, probs, CLASSES).to_csv(folder / "predictions.csv", index=False)
    metrics = {"test": classification_metrics(y, probs), "val": {"bacc": val_bacc}, "parameters": 1_500_000}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return Run.open(folder)


@pytest.fixture
def loss_study(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 120)
    good = 0.25 * np.eye(7)[y] + 0.75 * rng.dirichlet(np.ones(7), 120)
    poor = rng.dirichlet(np.ones(7), 120)
    val = {"CB + focal (joint)": 0.40, "focal + LS (joint)": 0.55, "CB + LS (joint)": 0.50, "CE": 0.90}
    study = experiments.loss_study(RunConfig(), [0, 1])
    for label in study.configs:
        v = val.get(label, 0.30)
        # the test set favours CB + LS: the choice must not look at it
        p = good if label == "CB + LS (joint)" else poor
        study.runs[label] = [fake_run(tmp_path / label.replace(" ", "_"), "r", val_bacc=v + 0.01 * s, probs=p, y=y,
                                      seed=s) for s in (0, 1)]
    return study, y, good, poor


def test_the_joint_loss_is_chosen_on_validation_only(loss_study):
    study, *_ = loss_study
    assert choose_joint_loss(study) == "focal + LS (joint)"  # CE has the best validation bacc but is not joint


def test_study_table_is_computed_from_the_runs(loss_study):
    from skinlib.evaluate import scalar_metrics

    study, y, good, poor = loss_study
    table = study.table(n_boot=50)
    assert list(tables.trained_rows(table).index) == list(study.configs)
    assert table.attrs["null_rows"] == ["majority class (" + CLASSES[np.bincount(y).argmax()] + ")",
                                        "chance (uniform guess)"]
    assert table.loc["chance (uniform guess)", "_bacc"] == pytest.approx(1 / 7)
    assert table.attrs["n_images"] == 120 and table.attrs["n_lesions"] == 60 and table.attrs["n_boot"] == 50
    row = table.loc["CB + LS (joint)"]
    assert row["_bacc"] == pytest.approx(scalar_metrics(y, good)["bacc"])
    assert row["_bacc_sd"] == 0.0  # two seeds with identical predictions
    assert row["_bacc_low"] < row["_bacc"] < row["_bacc_high"]
    assert table.loc["focal", "_bacc"] == pytest.approx(scalar_metrics(y, poor)["bacc"])
    assert table.loc["focal + LS (joint)", "val bacc %"] == "55.5 ± 0.7 (n=2)"
    assert row["params (M)"] == 1.5 and "accuracy %" in tables.public(table)
    assert not any(c.startswith("_") for c in tables.public(table).columns)
    assert tables.public(table).index.name == "variant"  # two seeds: mean ± sd (n=2) in the cells
    one = table.copy()
    one.attrs = {**table.attrs, "seeds": 1}
    assert tables.public(one).index.name == "variant (one seed)"
    diff = study.paired("CB + LS (joint)", "focal", n_boot=50)
    assert diff["difference"] > 0 and diff["low"] > 0


def test_paper_comparison_sets_the_paper_beside_ours(loss_study):
    study, *_ = loss_study
    rows = {"CE": {"accuracy": 90.0, "bacc_paper": 80.0, "params_m": 2.0}}
    table = paper.comparison(rows, study)
    ours = 100 * np.mean(study.metrics("CE", "accuracy"))
    assert table.loc["CE", "Δ acc (if top-1)"] == pytest.approx(round(ours - 90.0, 2))
    # eq. 8 reading: 1 - 2 (1 - top-1) / 7 per seed, then the mean; 90 % as eq. 8 is a top-1 of 65 %
    eq8 = 100 * np.mean([1 - 2 * (1 - a) / 7 for a in study.metrics("CE", "accuracy")])
    assert table.loc["CE", "Δ acc (if eq. 8)"] == pytest.approx(round(eq8 - 90.0, 2))
    assert table.loc["CE", "paper acc as top-1 if eq. 8 %"] == pytest.approx(65.0)
    assert table.loc["CE", "paper params (M)"] == 2.0 and table.loc["CE", "ours params (M)"] == 1.5
    # the null rows: always the majority class scores its share in top-1 and 1 - 2 (1 - share) / 7 under eq. 8
    y = np.asarray(study.runs["CE"][0].predictions()["label"])
    share = np.bincount(y).max() / len(y)
    majority = next(r for r in table.attrs["null_rows"] if r.startswith("majority"))
    assert table.loc[majority, "ours top-1 %"] == f"{100 * share:.1f}" and table.loc[majority, "paper acc %"] == ""
    assert table.loc[majority, "ours eq. 8 %"] == f"{100 * (1 - 2 * (1 - share) / 7):.1f}"


def test_one_mapping_of_paper_names():
    from skinlib import efficiency

    assert efficiency.PAPER_MODELS is paper.PAPER_MODELS
    assert experiments.TABLE3_MODELS is paper.TABLE3_MODELS
    assert list(paper.TABLE3_MODELS.values()) == list(paper.TABLE3)
    assert paper.PAPER_MODELS["MobileNetV3-CaCo"] == "mobilenet_v3_small_caco"


def test_base_config_maps_profile_values():
    config = experiments.base_config(subset=1.0, bn_momentum="default", image_size=224, epochs=3)
    assert config.subset is None and config.model_kwargs == {} and config.epochs == 3
    assert experiments.base_config(subset=0.1, bn_momentum=0.1).model_kwargs == {"bn_momentum": 0.1}


def test_the_loss_study_measures_the_losses_without_the_sampler():
    base = RunConfig(sampler="balanced", epochs=3)
    study = experiments.loss_study(base, [0])
    losses = {k: c for k, c in study.configs.items() if k != experiments.SAMPLER_ROW}
    assert {c.sampler for c in losses.values()} == {"random"}  # the loss is the only correction
    row = study.configs[experiments.SAMPLER_ROW]
    assert row.sampler == "balanced" and row.loss == "ce" and row.epochs == 3


@pytest.mark.parametrize("profile", ["smoke", "gpu"])
def test_the_printed_train_command_makes_the_studys_run(profile, tmp_path):
    """A solution that gives a command must name the study's run: parsed back, it has the same identity."""
    from skinlib import cli
    from skinlib.study.profiles import get_profile

    config = experiments.profile_config(get_profile(profile))
    for label, wanted in experiments.loss_study(config, [0]).configs.items():
        command = cli.train_command(wanted)
        args = cli.build_parser().parse_args(shlex.split(command)[1:])
        got = cli.config_from_args(args)
        assert got.identity() == wanted.identity() and got.config_hash() == wanted.config_hash(), (label, command)


def test_paired_words_flip_with_the_runs(loss_study):
    study, *_ = loss_study
    up = tables.paired_table(study, "focal", variants=["CB + LS (joint)"], n_boot=100)
    down = tables.paired_table(study, "CB + LS (joint)", variants=["focal"], n_boot=100)
    assert up.loc["CB + LS (joint)", "bacc"] == "higher" and down.loc["focal", "bacc"] == "lower"
    flipped = tables.paired_table(study, "CB + LS (joint)", variants=["focal"], n_boot=100, reference_minus=True)
    assert flipped.loc["focal", "bacc"] == "higher"  # now CB + LS minus focal
    assert flipped.loc["focal", "_bacc"] == pytest.approx(-down.loc["focal", "_bacc"])
    same = tables.paired_table(study, "focal", variants=["CE"], n_boot=100)  # identical predictions
    assert same.loc["CE", "bacc"] == "no difference shown"
    assert tables.word_counts(up, "bacc") == "1 higher"


def test_a_study_refuses_a_size_one_of_its_models_cannot_take_before_training_any(tmp_path):
    from skinlib.runs import RunConfig
    from skinlib.study.experiments import baseline_study

    study = baseline_study(RunConfig(image_size=32, epochs=1, device="cpu"), [0])
    with pytest.raises(ValueError, match="ghostnetv2_100 needs image_size >= 64"):
        study.train(Workspace.resolve(runs_dir=tmp_path))
    assert not any(tmp_path.iterdir())  # ResNet18 and ShuffleNetV2 were not trained first


def test_a_partial_bundle_blanks_only_the_variants_it_lacks(tmp_path, monkeypatch):
    """Rendering a partial bundle, a study keeps the variants whose runs are there and names the missing one:
    its table shows every other row with its numbers, the missing row as "not in the bundle", a paired table
    leaves it out, and asking for its runs raises MissingRunError (that cell alone becomes a note). Rendering a
    complete bundle, the same missing run stops the study."""
    from skinlib.policy import ENV
    from skinlib.runs import MissingRunError

    rng = np.random.default_rng(1)
    y = rng.integers(0, 7, 80)
    probs = 0.3 * np.eye(7)[y] + 0.7 * rng.dirichlet(np.ones(7), 80)
    study = experiments.baseline_study(RunConfig(), [0])
    lacking = next(iter(study.configs.values())).model
    runs = {c.model: fake_run(tmp_path / c.model, "r", val_bacc=0.5, probs=probs, y=y) for c in study.configs.values()}

    def opened(config, **_):
        if config.model == lacking:
            raise MissingRunError(f"run {config.model} is needed but not in the bundle")
        return runs[config.model]

    monkeypatch.setattr(studies, "fit", opened)
    monkeypatch.setenv(ENV["train"], "1")
    with pytest.raises(MissingRunError):  # a complete bundle: a missing run is an error
        experiments.baseline_study(RunConfig(), [0]).train()
    monkeypatch.setenv(ENV["partial_bundle"], "1")
    study = experiments.baseline_study(RunConfig(), [0]).train()
    label = next(k for k, c in study.configs.items() if c.model == lacking)
    assert list(study.absent) == [label] and label not in study.runs
    table = study.table(n_boot=20)
    assert table.loc[label, "bacc %"] == ABSENT_ROW
    present = [k for k in study.configs if k != label]
    assert all(table.loc[k, "bacc %"] != ABSENT_ROW and np.isfinite(table.loc[k, "_bacc"])
               for k in present)
    assert list(tables.trained_rows(table).index) == present
    with pytest.raises(MissingRunError, match="incomplete"):  # a family's words need the whole family
        tables.paired_table(study, present[0], n_boot=20)
    with pytest.raises(MissingRunError, match="incomplete"):
        tables.family_rows(table)
    assert list(tables.paired_table(study, present[0], variants=present[1:], n_boot=20).index) == present[1:]
    beside = paper.comparison(paper.TABLE3, study, labels=paper.table3_labels())
    assert beside.loc[label, "ours top-1 %"] == ABSENT_ROW and beside.loc[label, "paper acc %"] > 0
    assert all(beside.loc[k, "ours top-1 %"] != ABSENT_ROW for k in present)
    with pytest.raises(MissingRunError, match="not in the bundle"):
        study.runs[label]
    with pytest.raises(KeyError):
        study.runs["no such variant"]
    for other in study.configs.values():  # nothing at all: the study itself stops
        runs.pop(other.model, None)
    monkeypatch.setattr(studies, "fit", lambda config, **_: (_ for _ in ()).throw(MissingRunError("gone")))
    with pytest.raises(MissingRunError, match="none of"):
        experiments.baseline_study(RunConfig(), [0]).train()


def test_the_plan_declares_every_study_once_with_what_it_needs():
    """One registry answers which studies the book has, what each needs and which chapters read it; the runs it
    lists are those the book trains (independent ones at once, a dependent study after what it needs)."""
    from skinlib.book.notebooks import CHAPTERS
    from skinlib.study import plan

    assert tuple(plan.PLAN) == experiments.STUDIES
    assert [s.name for s in plan.independent()] == ["baselines", "scratch", "pretraining", "attention", "losses",
                                                   "leakage"]
    assert [s.name for s in plan.dependent()] == ["final", "recipes"]
    for entry in plan.PLAN.values():
        needs = {n.study for n in entry.needs}
        assert set(entry.chapters) <= set(CHAPTERS) and needs < set(plan.PLAN), entry.name
        assert list(plan.PLAN).index(entry.name) > max((list(plan.PLAN).index(n) for n in needs), default=-1)
    assert set(plan.get_step("final").derived) == set(plan.DERIVED)
    # the final model waits only for the joint losses, which go first in a window; both finals' runs are among
    # their candidates (what the identity test pins)
    config, seeds = RunConfig(), (0, 1)
    where = plan.Where(config, seeds)
    final_needs = plan.get_step("final").needed(where)
    assert {c.loss for c in final_needs} == {experiments.LOSS_VARIANTS[k] for k in experiments.JOINT_LOSSES}
    order = plan.window_order(where)
    assert {order[plan.run_key(c)][0] for c in final_needs} == {0} and min(order.values())[0] == 0
    assert max(order[plan.run_key(c)][0] for c in plan.get_step("attention").runs(where)) == 4
    with pytest.raises(ValueError, match="must list its candidates"):
        plan.step("lonely", about="x", chapters=(), needs=("losses",))
    with pytest.raises(ValueError, match="must list its candidates"):
        plan.step("eager", about="x", chapters=(), candidates=lambda w: None)
    with pytest.raises(ValueError, match="registered twice"):
        plan.step("losses", about="again", chapters=())(lambda w: None)
    with pytest.raises(ValueError, match="must be registered before"):
        plan.step("later", about="x", chapters=(), needs=("nothing",))
    with pytest.raises(ValueError, match="unknown derivation"):
        plan.step("odd", about="x", chapters=(), derived=("tsne",))
    independent = experiments.independent_runs(config, [0, 1])
    assert len(independent) == sum(len(s.build(plan.Where(config, (0, 1))).configs) * 2 for s in plan.independent())
    table = plan.plan_table()
    assert list(table.index) == list(plan.PLAN) and table.loc["recipes", "needs"] == "losses"
    assert table.loc["final", "needs"].startswith("losses (") and "CB + LS (joint)" in table.loc["final", "needs"]


BUILDERS = {"baseline_study": {"baselines", "scratch"}, "pretraining_study": {"pretraining"},
            "attention_study": {"attention"}, "loss_study": {"losses"}, "final_study": {"final"},
            "recipe_study": {"recipes"}, "leakage_study": {"leakage"}}


def test_every_study_a_chapter_builds_is_one_the_plan_says_it_reads():
    """A partial bundle's build decides before executing which chapters may lack runs from the plan's
    ``chapters``: a chapter that builds a study the plan does not list for it would meet a missing run as an
    error. So every study a chapter's code builds must be declared for that chapter."""
    import re

    from skinlib.book.notebooks import CHAPTERS
    from skinlib.study import plan

    root = Path(__file__).resolve().parents[1] / "notebooks"
    for chapter in CHAPTERS:
        cells = json.loads((root / f"{chapter}.ipynb").read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        declared = {s.name for s in plan.PLAN.values() if chapter in s.chapters}
        built = [BUILDERS[name] for name in re.findall(r"\b(\w+_study)\(", code) if name in BUILDERS]
        built += [{name} for name in re.findall(r"(?:run_study|make_study|ctx\.study)\(\s*\"(\w+)\"", code)]
        for options in built:
            assert options & declared, f"{chapter} builds {sorted(options)}, which the plan does not list for it"


def test_a_section_is_a_studys_table_with_the_words_its_chapter_reads(loss_study, monkeypatch):
    """``show(section, key)`` glues the words the functions of ``skinlib.book.sections`` compute and numbers the
    table; the words follow the runs (here: the test set's size and its majority class)."""
    from skinlib.book import kernel, sections

    study, y, *_ = loss_study
    runs = sections.study_runs(study, n_boot=50)
    majority = CLASSES[np.bincount(y).argmax()]
    assert runs.words["n_test"] == 120 and runs.words["n_lesions"] == 60 and runs.words["n_boot_used"] == 50
    assert runs.words["majority"] == f"majority class ({majority})"
    assert runs.words["majority_acc"] == f"{100 * np.mean(y == np.bincount(y).argmax()):.1f} %"
    assert list(runs.table.columns) == list(tables.public(runs.data).columns)  # shown: no numeric helper columns
    glued = {}
    monkeypatch.setattr(kernel, "glue_text", lambda **values: glued.update(values))
    monkeypatch.setattr(kernel, "_SHOWN", {})
    shown = kernel.show(runs, "05.runs")
    assert glued == dict(runs.words) and shown.number == "5.1" and shown.frame is runs.table


def test_the_melanoma_section_says_what_its_table_shows(loss_study):
    from skinlib.book import sections

    study, *_ = loss_study
    from skinlib.inference import arrays

    mel = sections.melanoma(*arrays(study.runs["CB + LS (joint)"][0].predictions()), n_boot=50)
    low, high = mel.table.iloc[0][["low", "high"]]
    assert mel.words["mel_80"].endswith(f"[{low:.1f}, {high:.1f}]") and mel.words["mel_n"] > 0
