"""Run identities are pinned: a refactor of the config schema, the studies or the profiles must not change
the folder a run is stored in (that would orphan every run store and results bundle)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from unittest import mock

import pytest
import yaml

from skinlib.runs import RunConfig, run_hash
from skinlib.study import experiments
from skinlib.study.experiments import profile_config
from skinlib.study.plan import Where, possible_runs
from skinlib.study.profiles import PROFILES

ROOT = Path(__file__).resolve().parents[1]

# name-config_hash-seed of every run the book's plan can ask for, per profile, every ImageNet weight present and
# whatever the loss study chooses, digested (sha256 of the sorted lines). When the plan took over from a list
# written here, its sets held every line of the earlier pins (smoke 24 of 32, cpu and paper 62 of 96, gpu 24 of 32):
# the new lines are the pre-trained baselines and the best-recipe candidates, which that list left out.
PINNED = {"smoke": "300630493bdf2766", "cpu": "9b347fc328244373", "gpu": "d93006474bf76ee3",
          "paper": "a8e3a97e8b7ee126"}
PINNED_SEED_0 = {"cpu": "9936c206dc6c36ac"}
"""The cpu profile grew from one seed to three: its seed-0 runs keep the identity they had (the bundle's runs)."""


def book_identities(profile: str) -> list[str]:
    """Every run the plan can ask for at ``profile`` (all weights present), as name-hash-seed lines."""
    params = PROFILES[profile]
    where = Where(profile_config(params), tuple(params.seeds), pretrained=True)
    with mock.patch.object(experiments, "weights_available", lambda model: True):
        runs = possible_runs(where)
    return sorted({f"{c.name}-{c.config_hash()}-s{c.seed}" for c in runs})


@pytest.mark.parametrize("profile", sorted(PINNED))
def test_the_runs_of_every_profile_keep_their_identity(profile):
    lines = book_identities(profile)
    assert hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16] == PINNED[profile], lines


@pytest.mark.parametrize("profile", sorted(PINNED_SEED_0))
def test_more_seeds_leave_the_first_seeds_runs_as_they_were(profile):
    lines = [line for line in book_identities(profile) if line.endswith("-s0")]
    assert hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16] == PINNED_SEED_0[profile], lines


def test_the_smoke_runs_keep_their_names():
    assert "mobilenet_v3_small-e92ceba507-s0" in book_identities("smoke")
    assert "mobilenet_v3_small_caco-loss_cb_focal-b854af04ef-s0" in book_identities("smoke")


def test_the_smoke_bundle_folders_are_their_runs_identity():
    """Each bundled run's folder is ``name-run_hash(config, data key)``: the hash of the run store."""
    import json

    runs = sorted((ROOT / "results" / "smoke" / "runs").iterdir())
    assert len(runs) == 20
    for folder in runs:
        config = RunConfig.from_dict(yaml.safe_load((folder / "config.yaml").read_text()))
        data_key = json.loads((folder / "data.json").read_text())["key"]
        assert folder.name == f"{config.name}-{run_hash(config, data_key)}"


def test_every_profile_is_the_base_with_its_differences():
    """Profiles are written as differences from the paper's scale: a difference names a real parameter, and the
    complete sets hold every profile parameter (so a parameter added to the base reaches every profile)."""
    from skinlib.study.profiles import BASE, DIFFERENCES, PARAMETERS

    assert set(BASE) == set(PARAMETERS) and set(DIFFERENCES) == set(PROFILES)
    for name, values in PROFILES.items():
        assert values.to_dict() == {"profile": name, **BASE, **DIFFERENCES[name]}
        assert all(BASE[k] != v for k, v in DIFFERENCES[name].items()), f"{name} restates a base value"


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_every_bundled_run_is_one_the_plan_asks_for(profile):
    """The committed bundles' runs are the plan's: none is orphaned by how the plan declares the studies."""
    possible = set(book_identities(profile))
    for config_file in sorted((ROOT / "results" / profile / "runs").glob("*/config.yaml")):
        config = RunConfig.from_dict(yaml.safe_load(config_file.read_text()))
        assert f"{config.name}-{config.config_hash()}-s{config.seed}" in possible, config_file.parent.name
