"""A study: variants of one experiment, each trained for several seeds through the run store, with its result
table and its seed-paired comparisons. The book's studies are defined in :mod:`skinlib.study.experiments`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from skinlib.evaluate import (
    SeedPaired,
    bootstrap_ci,
    format_ci,
    format_mean_sd,
    null_metrics,
    seed_paired,
    summarize_seeds,
)
from skinlib.inference import arrays
from skinlib.models.registry import check_image_size
from skinlib.runs import ABSENT_ROW, MissingRunError, Run, RunConfig, partial_bundle
from skinlib.runs.workspace import Workspace
from skinlib.study.parallel import Job, train_many
from skinlib.train import fit

log = logging.getLogger(__name__)


class StudyRuns(dict):
    """A study's runs by variant; asking for a variant a partial bundle lacks raises :class:`MissingRunError`
    (so the chapter's cell that needs it becomes a note), not ``KeyError``."""

    def __init__(self, *args: Any, absent: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.absent = absent if absent is not None else {}

    def __missing__(self, label: str) -> list[Run]:
        if label in self.absent:
            raise MissingRunError(f"{label}: {self.absent[label]}")
        raise KeyError(label)


@dataclass
class Study:
    """Variants of one experiment, each trained for several seeds; runs come from the run store. Rendering a
    partial bundle (:func:`~skinlib.runs.partial_bundle`), a variant whose runs are missing is left out of
    ``runs`` and named in ``absent`` (its tables show it as :data:`ABSENT_ROW`). A study whose variants were
    chosen on validation results keeps the choice in ``choice`` (the final model's joint loss, the recipes'
    :class:`~skinlib.study.experiments.RecipeChoice`)."""

    configs: dict[str, RunConfig]
    seeds: Sequence[int]
    runs: dict[str, list[Run]] = field(default_factory=StudyRuns)
    choice: Any = None

    @property
    def absent(self) -> dict[str, str]:
        return getattr(self.runs, "absent", {})

    def train(self, workspace: Workspace | None = None, *, jobs: int = 1, threads: int | None = None) -> Study:
        """Train (or reuse) every variant for every seed in ``workspace`` (default: the folders the environment
        names), ``jobs`` runs at a time (see :mod:`skinlib.study.parallel`).

        Every variant's image size is checked against its model first, so a size one model cannot take stops
        the study before any run trains (not after the others have)."""

        for config in self.configs.values():
            check_image_size(config.model, config.image_size)
        workspace = workspace or Workspace.resolve()
        trained: dict[int, bool] = {}
        if jobs > 1 or threads is not None:
            trained = train_many([Job(c.replace(seed=s), workspace) for c in self.configs.values()
                                  for s in self.seeds], jobs=jobs, threads=threads)
        position, partial = 0, partial_bundle()
        self.runs = StudyRuns()
        for label, config in self.configs.items():
            runs = []
            for s in self.seeds:  # after a parallel pass every run is finished: these calls only open them
                try:
                    run = fit(config.replace(seed=s), data_dir=workspace.data, runs_dir=workspace.runs)
                except MissingRunError as exc:
                    if not partial:
                        raise
                    self.runs.absent[label] = str(exc).splitlines()[0]
                    break
                run.trained = run.trained or trained.get(position, False)
                runs.append(run)
                position += 1
            if label not in self.runs.absent:
                self.runs[label] = runs
        if not self.runs:
            raise MissingRunError(f"none of {', '.join(self.configs)} is in the bundle: "
                                  f"{next(iter(self.runs.absent.values()))}")
        if self.runs.absent:
            log.warning("study: %s not in the bundle; shown without them", ", ".join(self.runs.absent))
        trained = sum(r.trained for rs in self.runs.values() for r in rs)
        log.info("study: %d runs, %d trained now, %d reused", sum(map(len, self.runs.values())), trained,
                 sum(map(len, self.runs.values())) - trained)
        return self

    @classmethod
    def of_runs(cls, runs: dict[str, list[Run]]) -> Study:
        """A study of finished runs gathered from other studies (to compare them paired on one test set)."""
        study = cls({label: rs[0].config for label, rs in runs.items()}, [r.config.seed for r in next(iter(
            runs.values()))])
        study.runs = StudyRuns(runs)
        return study

    def metrics(self, label: str, key: str, *, part: str = "test") -> list[float]:
        return [r.metrics()[part][key] for r in self.runs[label]]

    def table(self, *, n_boot: int = 1000, keys: Sequence[str] = ("accuracy", "bacc", "bacc_paper"),
              nulls: bool = True) -> pd.DataFrame:
        """Per variant: mean ± sd over seeds of each metric, and the class-stratified lesion-bootstrap 95 % CI
        of ``bacc`` for the first seed, as strings in percent, plus numeric columns for plots.

        With ``nulls`` two rows follow the variants: always answering the majority class, and uniform
        guessing (:func:`~skinlib.evaluate.null_metrics` on the first variant's test labels), the scores
        a model must beat to have learned anything. ``attrs`` say what stands behind the intervals
        (``n_boot``, ``n_images``, ``n_lesions``) and which rows are nulls.
        """
        rows = []
        for label, runs in self.runs.items():
            row: dict[str, Any] = {"variant": label}
            for key in keys:
                summary = summarize_seeds(self.metrics(label, key))
                row[f"{key} %"] = format_mean_sd(summary)
                row[f"_{key}"] = summary["mean"]
                row[f"_{key}_sd"] = summary["sd"]
            y, probs, lesions = arrays(runs[0].predictions())
            ci = bootstrap_ci(y, probs, groups=lesions, n_boot=n_boot, seed=0)
            row["bacc 95 % CI (seed 0)"] = format_ci(*ci.loc["bacc", ["estimate", "low", "high"]])
            row["_bacc_low"], row["_bacc_high"] = ci.loc["bacc", "low"], ci.loc["bacc", "high"]
            row["params (M)"] = round(runs[0].metrics()["parameters"] / 1e6, 3)
            row["val bacc %"] = format_mean_sd(summarize_seeds(self.metrics(label, "bacc", part="val")))
            rows.append(row)
        for label in self.absent:
            rows.append({"variant": label, **{f"{key} %": ABSENT_ROW for key in keys},
                         "bacc 95 % CI (seed 0)": ABSENT_ROW, "val bacc %": ABSENT_ROW})
        first = next(iter(self.runs.values()))[0]
        y = arrays(first.predictions())[0]
        null_labels = []
        if nulls:
            for label, values in null_metrics(y).items():
                row = {"variant": label}
                for key in keys:
                    value = values.get(key, float("nan"))
                    row[f"{key} %"] = f"{100 * value:.1f}"
                    row[f"_{key}"], row[f"_{key}_sd"] = value, 0.0
                row.update({"bacc 95 % CI (seed 0)": "", "_bacc_low": float("nan"), "_bacc_high": float("nan"),
                            "params (M)": float("nan"), "val bacc %": ""})
                rows.append(row)
                null_labels.append(label)
        table = pd.DataFrame(rows).set_index("variant")
        table.attrs.update(n_boot=n_boot, n_images=int(ci.attrs["n_images"]), n_lesions=int(ci.attrs["n_lesions"]),
                           null_rows=null_labels, seeds=len(self.seeds), absent=list(self.absent))
        return table

    def per_class(self, key: str = "sensitivity") -> pd.DataFrame:
        """Mean over seeds of a per-class metric (in %), one row per variant."""
        out = {}
        for label, runs in self.runs.items():
            per = pd.DataFrame([r.metrics()["test"][key] for r in runs])
            out[label] = (100 * per.mean()).round(1)
        return pd.DataFrame(out).T

    def paired(self, a: str, b: str, *, metric: str = "bacc", n_boot: int = 1000) -> dict[str, Any]:
        """``metric(a) - metric(b)`` on the same test images over the seeds both variants have (paired by
        seed): the mean difference, its 95 % interval from a bootstrap over seeds and lesions, each seed's
        difference and whether they agree in sign."""
        c = self.seed_paired(a, b, metric=metric, n_boot=n_boot)
        low, high = c.interval(0.95)
        return {"metric": metric, "difference": c.difference, "low": low, "high": high, "p_value": c.p_value,
                "per_seed": list(c.per_seed), "same_sign": c.same_sign, "n_boot": n_boot}

    def seed_paired(self, a: str, b: str, *, metric: str = "bacc", n_boot: int = 1000) -> SeedPaired:
        """The :class:`~skinlib.evaluate.SeedPaired` comparison of variants ``a`` and ``b`` (same split)."""
        pairs = list(zip(self.runs[a], self.runs[b]))
        merged_all = []
        for ra, rb in pairs:
            pa, pb = ra.predictions(), rb.predictions()
            merged = pa.merge(pb, on=["image_id", "lesion_id", "label"], suffixes=("_a", "_b"),
                              validate="one_to_one")
            if len(merged) != len(pa):
                raise ValueError(f"{a} and {b} were not tested on the same images; a paired comparison needs one "
                                 f"split")
            merged_all.append(merged.sort_values("image_id", ignore_index=True))
        cols = [c for c in self.runs[a][0].predictions().columns if c.startswith("p_")]
        first = merged_all[0]
        if any(not m["image_id"].equals(first["image_id"]) for m in merged_all[1:]):
            raise ValueError(f"the seeds of {a} and {b} were tested on different images; seeds share one split")
        return seed_paired(first["label"].to_numpy(), [m[[f"{c}_a" for c in cols]].to_numpy() for m in merged_all],
                           [m[[f"{c}_b" for c in cols]].to_numpy() for m in merged_all],
                           groups=first["lesion_id"].to_numpy(), metric=metric, n_boot=n_boot)
