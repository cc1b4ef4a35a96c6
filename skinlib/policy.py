"""What training may do in this process and in the processes it starts, as one frozen record.

Five switches steer training from afar: a book rendering a results bundle forbids training (and, for a partial
bundle, lets a study keep the variants it holds), a bundle decides which pre-trained rows the book asks for
whatever weight files are present, and a GPU window gives each training process its deadline and first-epoch
estimate. They must reach a chapter's kernel and a window's training processes, so the environment carries
them; this module is the only one that spells their variables. Read the policy with :func:`current`, hand it
on with :meth:`Policy.env` or change it for a block with :func:`applied`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from skinlib.io import temporary_env

ENV: dict[str, str] = {
    "train": "SKINLIB_NO_TRAIN",  # set: fit reuses finished runs and raises MissingRunError for the others
    "partial_bundle": "SKINLIB_PARTIAL_BUNDLE",
    "pretrained_models": "SKINLIB_PRETRAINED_MODELS",
    "deadline": "SKINLIB_DEADLINE",
    "epoch_estimate": "SKINLIB_EPOCH_ESTIMATE",
}
"""Each :class:`Policy` field's environment variable."""


@dataclass(frozen=True)
class Policy:
    """How training may proceed (the defaults: train freely, no bundle, no deadline)."""

    train: bool = True  # False: finished runs are reused, a missing one raises MissingRunError (a bundle renders)
    partial_bundle: bool = False  # a partial bundle renders: a study keeps the variants it holds
    pretrained_models: tuple[str, ...] | None = None  # a bundle renders: the models whose pre-trained runs it holds
    deadline: float | None = None  # Unix time by which a training process must be done (a GPU window's end)
    epoch_estimate: float | None = None  # seconds of one epoch, the window's estimate for a run not yet measured

    @property
    def renders_partial_bundle(self) -> bool:
        """Whether a study should show the variants a bundle holds instead of stopping at a missing one."""
        return not self.train and self.partial_bundle

    def env(self) -> dict[str, str]:
        """The policy as environment variables: an empty value means the default; the pre-trained models'
        variable is left out while weight files decide (``pretrained_models`` None)."""
        out = {ENV["train"]: "" if self.train else "1",
               ENV["partial_bundle"]: "1" if self.partial_bundle else "",
               ENV["deadline"]: "" if self.deadline is None else repr(self.deadline),
               ENV["epoch_estimate"]: "" if self.epoch_estimate is None else repr(self.epoch_estimate)}
        if self.pretrained_models is not None:
            out[ENV["pretrained_models"]] = ",".join(self.pretrained_models)
        return out

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Policy:
        """The policy the environment states (``os.environ`` by default); a number that does not parse is a
        ``ValueError`` naming its variable."""
        env = os.environ if env is None else env
        values = {field: env.get(name, "") for field, name in ENV.items()}
        numbers = {}
        for field in ("deadline", "epoch_estimate"):
            try:
                numbers[field] = float(values[field]) if values[field] else None
            except ValueError:
                raise ValueError(f"{ENV[field]}={values[field]!r} is not a number of seconds; unset it or give "
                                 "one") from None
        return cls(train=values["train"] in ("", "0"), partial_bundle=values["partial_bundle"] not in ("", "0"),
                   pretrained_models=None if ENV["pretrained_models"] not in env
                   else tuple(filter(None, values["pretrained_models"].split(","))), **numbers)

    def replace(self, **changes: object) -> Policy:
        return dataclasses.replace(self, **changes)


def current() -> Policy:
    """The policy in force in this process."""
    return Policy.from_env()


@contextmanager
def applied(**changes: object) -> Iterator[Policy]:
    """The current policy with ``changes``, in force for a ``with`` block (and the processes started in it)."""
    policy = current().replace(**changes)
    # unset, not empty, while weight files decide
    saved = os.environ.pop(ENV["pretrained_models"], None) if policy.pretrained_models is None else None
    try:
        with temporary_env(policy.env()):
            yield policy
    finally:
        if saved is not None:
            os.environ[ENV["pretrained_models"]] = saved
