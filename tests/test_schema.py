"""One schema: RunConfig's fields declare their type, default, range and choices once, and RunConfig,
the profiles' ``-p`` checks, ``skinlib train``'s flags and the chapters' parameters cells all follow it."""

from __future__ import annotations

import pytest

from skinlib.cli import train_fields
from skinlib.runs import RunConfig, specs
from skinlib.study.profiles import PARAMETERS, PROFILES, check_parameter


def outside(spec):
    """Values just outside a spec's range (or not among its choices)."""
    values = []
    if spec.low is not None:
        values.append(spec.low if spec.low_open else spec.low - 1)
    if spec.high is not None and spec.high != float("inf"):
        values.append(spec.high if spec.high_open else spec.high + 1)
    if spec.choices:
        values.append("not-a-choice")
    return values


def test_every_field_declares_its_meaning_and_its_default_is_valid():
    config = RunConfig()
    for name, spec in specs().items():
        assert spec.help, name
        assert getattr(config, name) == spec.default or name == "fractions"
        spec.validate(name, spec.default)


@pytest.mark.parametrize("name", [n for n, s in specs().items() if outside(s)])
def test_run_config_refuses_each_value_its_schema_refuses(name):
    spec = specs()[name]
    for value in outside(spec):
        kind = int if spec.type in (int, int | None) and not isinstance(value, str) else None
        value = kind(value) if kind else value
        with pytest.raises(ValueError, match=name):
            RunConfig(**{name: value})


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_profile_parameters_refuse_what_their_schema_refuses_and_take_every_profiles_value(name):
    spec = PARAMETERS[name]
    for value in outside(spec):
        if isinstance(value, float) and spec.type is int:
            value = int(value)
        with pytest.raises(ValueError, match=f"parameter {name}|unknown parameter {name}"):
            check_parameter(name, value)
    for profile in PROFILES.values():
        if name != "device":  # resolved against this machine
            check_parameter(name, getattr(profile, name))


def test_the_profile_schema_is_the_run_schema_for_the_fields_a_profile_sets():
    for name, spec in specs().items():
        if spec.profile:
            ours = PARAMETERS[name]
            assert (ours.help, ours.low, ours.high, ours.choices) == (spec.help, spec.low, spec.high, spec.choices)
    assert set(PROFILES["smoke"].to_dict()) == {"profile", *PARAMETERS}


def test_a_profile_is_frozen_typed_and_serialised_one_way():
    """A profile cannot be changed in place; ``to_dict`` (what papermill injects and ``bundle.json`` records)
    reads back to the same profile, chapter parameters included; an override is checked by name and value."""
    import dataclasses

    from skinlib.study.profiles import Profile, get_profile

    profile = get_profile("smoke", epochs=3, extra={"examples": 3}, examples=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        profile.epochs = 4
    assert profile.overrides == {"epochs": 3} and dict(profile.chapter) == {"examples": 5}
    assert Profile.from_dict(profile.to_dict(), extra={"examples": 3}) == profile
    assert profile.replace(lr=0.01).lr == 0.01 and profile.lr == PROFILES["smoke"].lr
    with pytest.raises(ValueError, match=r"unknown parameter 'epoch'; valid: .*epochs"):
        profile.replace(epoch=3)
    with pytest.raises(ValueError, match="unknown profile 'fast'; valid: smoke"):
        Profile.from_dict({"profile": "fast"})


def test_train_flags_are_the_fields_marked_as_flags_with_their_choices():
    flags = train_fields()
    assert list(flags) == [n for n, s in specs().items() if s.flag]
    for name, kwargs in flags.items():
        spec = specs()[name]
        assert kwargs["help"] == spec.help
        if spec.choices and spec.type is str:
            assert tuple(kwargs["choices"]) == spec.choices

