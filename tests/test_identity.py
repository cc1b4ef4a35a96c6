"""Run identities are pinned: a refactor of the config schema, the studies or the profiles must not change
the folder a run is stored in (that would orphan every run store and results bundle)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from skinlib.runs import RunConfig, run_hash
from skinlib.study.experiments import (
    JOINT_LOSSES,
    LOSS_SAMPLER,
    LOSS_VARIANTS,
    independent_runs,
    profile_config,
    variant,
)
from skinlib.study.profiles import PROFILES

ROOT = Path(__file__).resolve().parents[1]

# name-config_hash-seed of every run the book can train, per profile, digested (sha256 of the sorted lines)
PINNED = {"smoke": "c27d16b61d0382d9", "cpu": "699f5e3929251001", "gpu": "382d5cf6b35fc66c",
          "paper": "4f68881e8945e7ac"}
PINNED_SEED_0 = {"cpu": "85c72c1fc5f59a09"}
"""The cpu profile grew from one seed to three: its seed-0 runs keep the identity they had (the bundle's runs)."""


def book_identities(profile: str) -> list[str]:
    params = PROFILES[profile]
    config = profile_config(params)
    runs = independent_runs(config, params["seeds"], pretrained=False)
    runs += [variant(config, model=m, pretrained=True) for m in ("resnet18", "mobilenet_v3_small")]
    runs += [variant(config.replace(sampler=LOSS_SAMPLER), model="mobilenet_v3_small_caco", loss=LOSS_VARIANTS[j])
             for j in JOINT_LOSSES]
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
        assert values == {"profile": name, **BASE, **DIFFERENCES[name]}
        assert all(BASE[k] != v for k, v in DIFFERENCES[name].items()), f"{name} restates a base value"
