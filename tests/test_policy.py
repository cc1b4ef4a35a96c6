"""The training policy: one record, carried by the environment into kernels and child processes."""

from __future__ import annotations

import pytest


def test_the_policy_travels_through_the_environment_and_back(monkeypatch):
    from skinlib.policy import ENV, Policy, applied, current

    policy = Policy(train=False, partial_bundle=True, pretrained_models=("resnet18",), deadline=12.5,
                    epoch_estimate=3.0)
    assert Policy.from_env(policy.env()) == policy and Policy.from_env({}) == Policy()
    assert Policy.from_env(Policy(pretrained_models=()).env()).pretrained_models == ()  # a bundle without any
    assert policy.renders_partial_bundle and not Policy(partial_bundle=True).renders_partial_bundle
    for name in ENV.values():
        monkeypatch.delenv(name, raising=False)
    with applied(train=False):
        assert not current().train
        with applied(train=True, deadline=5.0):
            assert current() == Policy(deadline=5.0)
        assert current() == Policy(train=False)
    assert current() == Policy()
    monkeypatch.setenv(ENV["deadline"], "soon")
    with pytest.raises(ValueError, match="SKINLIB_DEADLINE='soon' is not a number"):
        current()
