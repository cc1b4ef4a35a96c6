"""The pages a build writes beside the chapters: what the build found (``findings.md``) and where its numbers
come from (``provenance.md``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from skinlib.book.export import glued_values
from skinlib.book.notebooks import CHAPTERS
from skinlib.evaluate import ECE_BINS
from skinlib.runs.workspace import Workspace
from skinlib.study.inventory import profile_runs
from skinlib.study.profiles import SUMMARIES, Profile, comparable_with_paper

log = logging.getLogger(__name__)


PROVENANCE_FILE = "provenance.md"  # included by the landing page: where the numbers come from


FINDINGS_FILE = "findings.md"  # included at the top of the landing page: what this build found


MODEL_CARD_FILE = "model_card.md"  # included by book/model_card.md: the final model's card, from chapter 06


DISTANCE_KEYS = ("top1", "ovr", "ovr_majority", "gap_acc", "gap_acc_word", "memorisation", "pretrain_gain",
                 "paper_caco_top1", "r18_match")


def distance_summary(executed: Path) -> list[str]:
    """The landing page's short account of why these numbers differ from the paper's, filled from the values the
    reproduction chapter computed and glued (nothing when that chapter has not been executed)."""
    import nbformat


    path = executed / "08_reproduction.ipynb"
    if not path.is_file():
        return []
    glued = glued_values(nbformat.read(path, as_version=4))
    if not all(k in glued for k in DISTANCE_KEYS):
        return []
    g = glued
    return ["### Why these numbers differ from the paper's", "",
            f"Four causes, each measured or bounded in {{doc}}`executed/08_reproduction`: **what the number "
            f"means** (our final model's top-1 accuracy is {g['top1']}, its mean one-vs-rest accuracy, the paper's "
            f"eq. 8, {g['ovr']}, and the majority class alone scores {g['ovr_majority']} under that reading; read with "
            f"eq. 8, the paper's 93.39 % is a top-1 accuracy of {g['paper_caco_top1']}, and {g['r18_match']}); "
            f"**the split** (an image-level split changes accuracy by {g['gap_acc']} points here, "
            f"{g['gap_acc_word']}; {g['memorisation']}); **ImageNet pre-training** ({g['pretrain_gain']} points of "
            f"accuracy for "
            f"MobileNetV3-Small in the paper's own Table 2); and **the scale of this profile** (resolution, "
            f"epochs, data), which only the `gpu` and `paper` profiles can measure. The paper's own split and "
            f"metric reading remain unknown.", ""]


# the landing page's findings: (chapter, sentence with {glued} names); a sentence whose values a chapter did not
# glue (not executed, or a page standing in for missing runs) is left out
FINDINGS: tuple[tuple[str, str], ...] = (
    ("02_baselines", "**Baselines** (the paper's Table 3): {ranking}"),
    ("04_attention", "**Attention**: {caco_vs_se}"),
    ("05_losses", "**Losses**: on validation the study chose {chosen_loss}; each of the {n_losses} losses against "
                  "plain CE on test `bacc` (Holm-corrected, every seed agreeing): {bacc_words}."),
    ("06_final_model", "**The final model** (MobileNetV3-CaCo, {final_loss}): test `bacc` {final_bacc} and accuracy "
                       "{final_acc} (in %, with 95 % intervals); {vs_baseline}"),
    ("06_final_model", "**Two recipes**: {recipe_choice}. CaCo trained with it, against the paper-recipe final: "
                       "{best_vs_paper}."),
    ("06_final_model", "**External test** (ISIC 2018 Task 3): `bacc` {ext_bacc} and accuracy {ext_acc} (in %)."),
)


def findings_page(profile: str, executed: Path) -> str:
    """The top of the landing page: whether these numbers may be set against the paper's, then what this build
    found, each sentence filled from the values its chapter computed and glued."""
    import nbformat


    if comparable_with_paper(profile):
        head = f"Built with the `{profile}` profile: full data at the paper's scale, comparable with its numbers."
    else:
        head = (f"**These numbers are not comparable with the paper's.** Built with the `{profile}` profile: "
                f"{SUMMARIES.get(profile, 'a custom profile')}.")
    lines = [":::{important}", head, ":::", "", "## What this build found", ""]
    glued: dict[str, dict[str, str]] = {}
    for chapter, sentence in FINDINGS:
        path = executed / f"{chapter}.ipynb"
        if chapter not in glued:
            glued[chapter] = glued_values(nbformat.read(path, as_version=4)) if path.is_file() else {}
        try:
            lines.append(f"- {sentence.format(**glued[chapter])} ({{doc}}`executed/{chapter}`)")
        except KeyError:
            continue
    if lines[-1] == "":
        ran = [c for c in dict(FINDINGS) if (executed / f"{c}.ipynb").is_file()]
        lines.append("No finding can be stated yet: every one needs a run that this build's results bundle lacks "
                     "(each chapter names the runs it is missing)." if ran else
                     "No chapter with results was executed in this build.")
    return "\n".join(lines) + "\n"


def provenance_page(profile: str, values: Profile, stamps: dict[str, Any], *,
                    workspace: Workspace,
                    bundle: dict[str, Any] | None, executed: Path | None = None, from_snapshot: bool = False) -> str:
    """The landing page's "Where these numbers come from": profile per chapter, when and on which device the
    runs were computed (from the runs' metrics, or the results bundle's metadata), and the command to redo it."""

    runs = profile_runs(values, workspace).finished
    envs = [r.metrics().get("environment", {}) for r in runs]
    times = sorted(e["finished_utc"] for e in envs if e.get("finished_utc"))
    devices = sorted({e.get("gpu") or e.get("device", "unknown") for e in envs})
    torches = sorted({e.get("torch", "?") for e in envs})
    when = (f"between {times[0]} and {times[-1]} (UTC)" if len(times) > 1 and times[0] != times[-1]
            else f"on {times[0]} (UTC)" if times else "at an unrecorded time (older runs)")
    lines = ["| chapter | profile | numbers |", "| --- | --- | --- |"]
    source = "results bundle, rendered without training" if bundle else "runs trained or reused by this build"
    for name in CHAPTERS:
        stamp = stamps.get(name)
        if stamp is None:
            continue
        lines.append(f"| {name.replace('_', ' ')} | `{stamp.get('profile', '?')}` | {source} |")
    summary = SUMMARIES.get(profile, "a custom profile")
    text = [f"The chapters were executed with the **`{profile}`** profile: {summary}. "
            f"Their {len(runs)} training runs were finished {when} on {', '.join(devices) or 'no device'} "
            f"(PyTorch {', '.join(torches) or '?'}).", ""]
    if bundle:
        known = bundle.get("git_commit") not in (None, "", "unknown")
        commit = f" from commit `{bundle['git_commit']}`" if known else " from a commit it does not record"
        text += [f"They come from the committed results bundle `results/{bundle['profile']}`, packed "
                 f"{bundle['packed_utc']}{commit}; this book was rendered from it on a machine that trained nothing"
                 + (", and had no data: the data tables and drawn images come from the bundle's data summary "
                    "(every image's metadata and SHA-256, and the few images the chapters draw)." if from_snapshot
                    else "; the data here was checked to be the data the runs were trained on."), ""]
    if bundle:
        again = (f"To render this book again: `make book PROFILE={profile}`; to compute its runs again on a GPU: "
                 f"`python3 benchmarks/gpu_window.py run OUT`")
    else:
        again = f"To compute them again: `{'make book' if profile == 'smoke' else f'skinlib book --profile {profile}'}`"
    text += [*lines, "", f"{again} (see {{doc}}`/book/reproduce` for the hardware and time per profile).", ""]
    if executed is not None:
        text += distance_summary(executed)
    if any(stamps.get(name, {}).get("student") for name in CHAPTERS):
        text += ["This is the **student edition**: the exercises keep their hints, their solutions are left out "
                 "(`skinlib book --student`).", ""]
    return "\n".join(text)


MODEL_CARD_KEYS = ("final_loss", "final_params", "n_final_seeds", "final_bacc", "final_acc", "final_bacc_paper",
                   "ext_bacc", "ext_acc", "mel_80", "mel_90", "mel_n", "final_ece", "subgroups_final", "n_test",
                   "n_lesions", "recipe_choice", "best_vs_paper")


def model_card_page(profile: str, executed: Path) -> str:
    """The final model's card (intended use and not, data, metrics with intervals, subgroups, limitations), every
    number from what chapter 06 computed and glued in this build; without that chapter, a line saying so."""
    import nbformat


    path = executed / "06_final_model.ipynb"
    g = glued_values(nbformat.read(path, as_version=4)) if path.is_file() else {}
    if not all(k in g for k in MODEL_CARD_KEYS):
        return ("This build did not execute chapter 06 with every run it needs (the final model's runs or its "
                "derived results are missing), so the card has no numbers to state.\n")
    scale = ("the paper's scale" if comparable_with_paper(profile)
             else f"**not** the paper's scale ({SUMMARIES.get(profile, 'a custom profile')})")
    return "\n".join([
        "## Model details", "",
        f"- **Model**: MobileNetV3-CaCo (MobileNetV3-Small with an SE channel gate followed by coordinate attention "
        f"in its 9 attention slots), {g['final_params']} parameters, trained from random weights with the paper's "
        f"recipe: the joint loss chosen on validation ({g['final_loss']}) and the random sampler.",
        f"- **Built with** the `{profile}` profile: {scale}; {g['n_final_seeds']} training seed(s), one data split.",
        f"- **A second final**, trained with the recipe chosen on validation: {g['recipe_choice']}; against the "
        f"paper-recipe final: {g['best_vs_paper']} ({{doc}}`executed/06_final_model`).", "",
        "## Intended use", "",
        "- Reading and re-running a reproduction of a published method; teaching how a medical-imaging claim is "
        "tested (splits, intervals, nulls).",
        "- **Not for** diagnosis, screening, triage or any decision about a person. The model was never tested "
        "prospectively or on clinical photographs, and a dermoscopy classifier is not a medical device.", "",
        "## Data", "",
        f"- HAM10000 (seven classes, dermoscopy), split 70 / 10 / 20 by lesion, so no lesion is in two parts; "
        f"the test part holds {g['n_test']} images of {g['n_lesions']} lesions. External test: the official "
        f"ISIC 2018 Task 3 test images.",
        "- HAM10000 records age, sex and anatomical site, not skin type; its images come from two centres "
        "(Vienna and Queensland), so darker skin is rare in it and performance there is unknown.", "",
        "## Metrics (seed 0, 95 % lesion-bootstrap intervals, in %)", "",
        f"- Internal test: `bacc` (mean recall) {g['final_bacc']}, accuracy {g['final_acc']}, the paper's BACC "
        f"(eq. 8-11) {g['final_bacc_paper']}.",
        f"- ISIC 2018 Task 3: `bacc` {g['ext_bacc']}, accuracy {g['ext_acc']}.",
        f"- Melanoma sensitivity at 80 % specificity {g['mel_80']}, at 90 % {g['mel_90']} ({g['mel_n']} "
        f"melanomas; thresholds set on the test part, an optimistic reading).",
        f"- Calibration: ECE {g['final_ece']} (top-class confidence, {ECE_BINS} bins).", "",
        "## Subgroups", "",
        f"Each subgroup against the rest of the test part within class (Holm-corrected per attribute): "
        f"{g['subgroups_final']}. Sizes, class mix and intervals: {{doc}}`executed/06_final_model`.", "",
        "## Limitations", "",
        "- The paper's split, image size, augmentation and CaCo internals are not published; ours are stated in "
        "{doc}`executed/08_reproduction`, and the numbers there are not the paper's.",
        "- The ISIC 2018 copies used here were resized from 224 x 224, softer than the training images.",
        "- Subgroup words are not adjusted for one another (age bands differ in sites and classes too), and "
        "confirmation by histopathology marks lesions that looked suspicious enough to excise: a clinical path, not "
        "a population.", ""])
