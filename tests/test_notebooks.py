"""Source notebooks: one parameters cell, no outputs, and they run under papermill (smoke, tiny)."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import papermill
import pytest

from skinlib.book.execute import execute_chapter
from skinlib.book.notebooks import CHAPTERS, BookError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# smaller than the smoke profile so that the test run stays short
# 64 px: the smallest size every zoo model accepts (GhostNetV2)
TINY = {"profile": "smoke", "image_size": 64, "epochs": 1, "subset": 0.03, "bn_momentum": 0.1, "device": "cpu",
        "n_boot": 20, "latency_runs": 3, "seeds": [0]}


@pytest.fixture(scope="module")
def shared_runs(tmp_path_factory):
    """One run store for all chapters, as in a real build: later chapters reuse earlier runs."""
    return tmp_path_factory.mktemp("runs")


def test_every_chapter_has_a_notebook():
    assert [p.stem for p in NOTEBOOKS] == list(CHAPTERS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_clean_with_one_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    headings = [c["source"] for c in nb["cells"] if c["cell_type"] == "markdown"]
    text = "\n".join(headings)
    for section in ("## Overview", "## Prerequisites", "## Imports", "## Summary", "### Exercises", "## References"):
        assert section in text, f"{path.name} lacks {section}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_profile_parameters_default_to_the_profile(path):
    """A re-runner's ``papermill ... -p profile paper`` must not keep smoke literals."""
    from skinlib.study.profiles import PARAMETERS

    declared = papermill.inspect_notebook(str(path))
    profile_params = [k for k in declared if k in PARAMETERS]
    assert profile_params
    assert all(declared[k]["default"] == "None" for k in profile_params), path.name


def test_chapter_takes_unset_parameters_from_the_profile():
    from skinlib.book.kernel import chapter
    from skinlib.study.profiles import PROFILES

    ctx = chapter(profile="paper", show=False, image_size=None, epochs=None, subset=None, bn_momentum=None,
                  batch_size=None, lr=None, device=None, seeds=None, n_boot=None)
    assert ctx.epochs == PROFILES["paper"].epochs and ctx.seeds == PROFILES["paper"].seeds
    assert ctx.config.image_size == 224 and ctx.config.subset is None and ctx.config.model_kwargs == {}
    assert ctx.overrides == {}
    smoke = chapter(profile="smoke", show=False, epochs=16, image_size=None)
    assert smoke.epochs == 16 and smoke.image_size == PROFILES["smoke"].image_size
    assert smoke.overrides == {"epochs": 16}
    # a notebook passes its namespace: the parameters cell's names, other globals ignored
    cell = {"profile": "smoke", "data_dir": "", "runs_dir": "/r", "epochs": 4, "image_size": None, "np": object()}
    from_cell = chapter(cell, show=False)
    assert set(from_cell.shown) == {"epochs", "image_size"}  # what the cell declares, which its page lists
    assert {k: getattr(from_cell, k) for k in from_cell.shown} == {"epochs": 4,
                                                                 "image_size": PROFILES["smoke"].image_size}
    # the trap closed: a profile parameter the cell does not declare takes the profile's value in the runs (as
    # the build's pre-training does), never RunConfig's default
    assert from_cell.config.sampler == PROFILES["smoke"].sampler == "balanced"
    assert from_cell.config.batch_size == PROFILES["smoke"].batch_size and from_cell.config.epochs == 4
    assert str(from_cell.workspace.runs) == "/r" and from_cell.overrides == {"epochs": 4}  # the folders resolved once
    assert from_cell.workspace.runs == Path("/r") and from_cell.workspace.cache.is_absolute()
    with pytest.raises(ValueError, match="needs a profile"):
        chapter({"epochs": 4}, show=False)
    with pytest.raises(ValueError, match=r"unknown parameter 'epoch'; valid: .*epochs"):
        chapter(profile="smoke", show=False, epoch=16)
    with pytest.raises(ValueError, match="parameter epochs must be an integer"):
        chapter(profile="smoke", show=False, epochs="16")


@pytest.mark.slow  # multi-process or a whole chapter: CI's slow step
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_under_papermill(path, tmp_path, data_dir, shared_runs):
    declared = papermill.inspect_notebook(str(path))
    params = {k: v for k, v in {**TINY, "data_dir": str(data_dir), "runs_dir": str(shared_runs)}.items()
              if k in declared}
    out = tmp_path / path.name
    papermill.execute_notebook(str(path), str(out), parameters=params, kernel_name="python3",
                               cwd=str(tmp_path), progress_bar=False)
    nb = nbformat.read(out, as_version=4)
    shown = "\n".join(o.get("data", {}).get("text/markdown", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.outputs)
    # the page states the values it actually ran with, and that they differ from the profile's
    assert "`image_size` = `64`" in shown
    if "epochs" in declared:
        assert "`epochs` = `1`" in shown and "Changed from the profile: `epochs` = `1`" in shown
    glued = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
             if "application/papermill.record/text/plain" in o.get("data", {})]
    assert glued, "the chapter glues its numbers for the book"


def test_failing_chapter_is_named_and_leaves_no_output(tmp_path):
    root = tmp_path / "repo"
    (root / "notebooks").mkdir(parents=True)
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_code_cell("raise ValueError('broken on purpose')"),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, root / "notebooks" / "01_data.ipynb")
    with pytest.raises(BookError, match=r"notebook 01_data failed in cell 1 .*ValueError: broken on purpose"):
        execute_chapter("01_data", {}, root=root)
    executed = root / "book" / "executed"
    assert not (executed / "01_data.ipynb").exists()
    assert (executed / "01_data.failed.ipynb").exists()


def test_a_chapter_needing_a_run_a_partial_bundle_lacks_shows_the_rest(tmp_path):
    """Rendering a partial bundle: the cell that needs the missing run and the cells built on it become notes;
    every other cell runs and keeps its output; prose refers to absent values as such; other errors still fail."""
    from skinlib.book.partial import ABSENT

    root = tmp_path / "repo"
    (root / "notebooks").mkdir(parents=True)
    kernel = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Baselines\n\n## Overview\n\nFive networks."),
        nbformat.v4.new_code_cell("from skinlib.book import glue_text\nfrom skinlib.runs import MissingRunError\n"
                                  "glue_text(n_images=1512)"),
        nbformat.v4.new_code_cell("table = {'a': 1}\n"
                                  "raise MissingRunError('run resnet18-abc is needed but not in the bundle')"),
        nbformat.v4.new_code_cell("glue_text(best=max(table))\nprint('built on the table')"),
        nbformat.v4.new_code_cell("best = 'mine'\nprint('independent of the table', best)"),
        nbformat.v4.new_code_cell("shown = table\n"),
        nbformat.v4.new_code_cell("print(len(shown))"),
        nbformat.v4.new_markdown_cell("Test images: {glue:text}`n_images`; best: {glue:text}`best`."),
    ], metadata=kernel)
    nbformat.write(nb, root / "notebooks" / "02_baselines.ipynb")
    with pytest.raises(BookError, match="MissingRunError: run resnet18-abc"):  # a complete bundle: an error
        execute_chapter("02_baselines", {"profile": "gpu"}, root=root)
    execute_chapter("02_baselines", {"profile": "gpu"}, root=root, missing=["resnet18 seed 0", "shufflenet seed 0"])
    page = nbformat.read(root / "book" / "executed" / "02_baselines.ipynb", as_version=4)
    text = "\n".join(c.source for c in page.cells if c.cell_type == "markdown")
    outputs = "\n".join(o.get("text", "") for c in page.cells if c.cell_type == "code" for o in c.outputs)
    assert page.cells[0].source.startswith("# Baselines") and "run `resnet18-abc`" in text
    assert "- `resnet18 seed 0`" in text and "- `shufflenet seed 0`" in text and "gpu_window.py" in text
    assert "independent of the table mine" in outputs and "built on the table" not in outputs
    assert text.count("Not shown:") == 4  # the failing cell and the three that read what it defines
    assert f"Test images: {{glue:text}}`n_images`; best: {ABSENT}." in text
    assert not (root / "book" / "executed" / "02_baselines.failed.ipynb").exists()
    assert sorted(p.name for p in (root / "book" / "executed").iterdir()) == ["02_baselines.ipynb"]
    bad = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("raise ValueError('other')")], metadata=kernel)
    nbformat.write(bad, root / "notebooks" / "02_baselines.ipynb")
    with pytest.raises(BookError, match="ValueError: other"):  # any other error still fails the build
        execute_chapter("02_baselines", {"profile": "gpu"}, root=root, missing=["resnet18 seed 0"])


def test_the_names_a_cell_defines_and_reads():
    from skinlib.book.partial import names

    defined, read = names("import numpy as np\nfrom a.b import c\nx = np.zeros(3)\ntable.loc[1] = y\n"
                          "def f(z):\n    return z + w\nfor i in items:\n    v = i\n")
    assert {"np", "c", "x", "table", "f", "i", "v"} <= defined
    assert {"y", "w", "items", "table"} <= read and "x" not in read and "i" not in read
    assert "best" in names("best = best + 1")[1]  # read before it is assigned: it comes from an earlier cell
    assert names("import numpy as np\nnp.ones(2)\n[r for r in rows]")[1] == {"rows"}


def test_only_what_builds_on_a_missing_run_is_replaced():
    from skinlib.book.partial import Gaps

    cells = [nbformat.v4.new_code_cell(src) for src in (
        "import pandas as pd\nctx = 1", "import pandas as pd\nstudy = ctx", "table = pd.DataFrame(study)",
        "study = 2\nprint(pd, ctx)", "print(study)", "print(table)")]
    gaps = Gaps(needs_run={cells[1].id: "run x is needed"})
    gaps.plan(cells)
    # pd is still imported by the first cell; study is defined afresh by the fourth; table stays absent
    assert gaps.follows == {cells[2].id, cells[5].id} and gaps.tainted == {"table"}


def test_only_needs_the_other_chapters_first(tmp_path, data_dir):
    from skinlib.book.build import build_book

    root = tmp_path / "repo"
    (root / "notebooks").mkdir(parents=True)
    (root / "_config.yml").write_text("title: t\n")
    with pytest.raises(BookError, match=r"--only needs the other chapters executed first \(missing: 01_data"):
        build_book("smoke", only=["04_attention"], root=root, data_dir=data_dir, runs_dir=tmp_path / "runs")
    with pytest.raises(ValueError, match="unknown chapter"):
        build_book("smoke", only=["99_nothing"], root=root, data_dir=data_dir, runs_dir=tmp_path / "runs")
    # the other chapters executed with solutions: a student --only would make a mixed book
    executed = root / "book" / "executed"
    executed.mkdir(parents=True)
    others = [c for c in CHAPTERS if c != "04_attention"]
    for c in others:
        (executed / f"{c}.ipynb").write_text("{}")
    (executed / ".parameters.json").write_text(json.dumps({c: {"student": False} for c in others}))
    with pytest.raises(BookError, match="would mix editions"):
        build_book("smoke", only=["04_attention"], root=root, data_dir=data_dir, runs_dir=tmp_path / "runs",
                   student=True)


def test_a_missing_glue_key_fails_the_build(tmp_path):
    from skinlib.book.build import build_html

    root = tmp_path / "book"
    root.mkdir()
    (root / "_config.yml").write_text('title: t\nexecute:\n  execute_notebooks: "off"\n')
    (root / "_toc.yml").write_text("format: jb-book\nroot: page\n")
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Page\n\nThe value is {glue:text}`never_glued`."),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, root / "page.ipynb")
    with pytest.raises(BookError, match=r"no book was built(?s:.*)never_glued"):
        build_html(root)
    assert not (root / "_build" / "html").exists(), "a failed build makes no book"
    previous = root / "_build" / "html" / "index.html"
    previous.parent.mkdir(parents=True)
    previous.write_text("the last good book")
    with pytest.raises(BookError, match="the previous book is kept"):
        build_html(root)
    assert previous.read_text() == "the last good book"  # a failed build destroys nothing
    assert not (root / "_build" / ".staging").exists()


def test_public_path_hides_machine_folders(tmp_path, monkeypatch):
    from skinlib.book.kernel import public_path

    monkeypatch.setenv("HOME", str(tmp_path))
    assert public_path(tmp_path / ".cache" / "torch" / "w.pth") == "~/.cache/torch/w.pth"
    assert public_path(ROOT / "runs" / "x") == "runs/x"
    assert public_path("/opt/elsewhere/w.pth") == "w.pth"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_exercise_has_a_hint_and_a_tagged_solution_in_dropdowns(path):
    nb = nbformat.read(path, as_version=4)
    text = next(c.source for c in nb.cells if c.cell_type == "markdown" and "### Exercises" in c.source)
    listed = len([line for line in text.split("### Exercises", 1)[1].splitlines() if line[:3].rstrip(". ").isdigit()])
    hints = [c for c in nb.cells if c.cell_type == "markdown" and c.source.startswith(":::{admonition} Hint")]
    solutions = [c for c in nb.cells if c.cell_type == "markdown" and "Solution to exercise" in c.source]
    assert listed >= 2 and len(hints) == listed and len(solutions) == listed
    for cell in hints:
        assert ":class: dropdown" in cell.source and "solution" not in cell.metadata.get("tags", [])
    for cell in solutions:
        assert cell.source.startswith(":::{admonition} Solution") and ":class: dropdown" in cell.source
        assert "solution" in cell.metadata.get("tags", [])
    for cell in nb.cells:  # solution code comes after its solution text; its code and output fold together
        if cell.cell_type == "code" and "solution" in cell.metadata.get("tags", []):
            assert "hide-cell" in cell.metadata["tags"]


def test_student_edition_leaves_solutions_out_and_never_runs_them(tmp_path):
    root = tmp_path / "repo"
    (root / "notebooks").mkdir(parents=True)
    marker = tmp_path / "solution-ran"
    cells = [nbformat.v4.new_code_cell("x = 1"),
             nbformat.v4.new_markdown_cell(":::{admonition} Hint to exercise 1\n:class: dropdown tip\nlook\n:::"),
             nbformat.v4.new_markdown_cell(":::{admonition} Solution to exercise 1\n:class: dropdown\n42\n:::"),
             nbformat.v4.new_code_cell(f"open({str(marker)!r}, 'w').write('ran')")]
    for cell in cells[2:]:
        cell.metadata["tags"] = ["solution"]
    nb = nbformat.v4.new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, root / "notebooks" / "01_data.ipynb")
    execute_chapter("01_data", {}, root=root, student=True)
    out = nbformat.read(root / "book" / "executed" / "01_data.ipynb", as_version=4)
    assert [c.source[:26] for c in out.cells] == ["x = 1", ":::{admonition} Hint to ex"]
    assert not marker.exists() and not list((root / "book" / "executed").glob(".*student*"))
    execute_chapter("01_data", {}, root=root)
    out = nbformat.read(root / "book" / "executed" / "01_data.ipynb", as_version=4)
    assert len(out.cells) == 4 and marker.read_text() == "ran"


def test_export_rewrites_myst_for_jupyter():
    from skinlib.book.export import plain_markdown

    text = ("Test `bacc` {glue:text}`bacc` %, see {doc}`04_attention` and {doc}`the methods </book/methods>` "
            "{cite:p}`shi2023skin`.\n\n:::{admonition} Hint to exercise 1\n:class: dropdown tip\nLook.\n:::\n\n"
            ":::{note} Careful\nTwo\nlines\n:::")
    out = plain_markdown(text, {"bacc": "42.0 [40.1, 44.0]"})
    assert "Test `bacc` 42.0 [40.1, 44.0] %, see 04_attention and the methods [shi2023skin]." in out
    assert "<details><summary><b>Hint to exercise 1</b></summary>\n\nLook.\n\n</details>" in out
    assert "> **Careful**\n>\n> Two\n> lines" in out and "{" not in out


def test_exported_handouts_convert_the_admonitions_code_displays(tmp_path):
    """A chapter's displayed notes (profile, data source) are MyST in the book; a handout shows them as quotes."""
    import nbformat

    from skinlib.book.export import _read
    from skinlib.book.kernel import admonition

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("note")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"text/markdown": admonition(
        "warning", "Built with the smoke profile", "Not the paper's scale.").data})]
    nb.cells = [cell]
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, path)
    shown = _read(path, student=False).cells[0].outputs[0]["data"]["text/markdown"]
    assert ":::" not in shown and "> **Built with the smoke profile**" in shown


def test_the_teachers_page_counts_come_from_the_chapters():
    """The runs an exercise trains, as the teachers page states them, are the studies' own counts."""
    import re

    from skinlib import paper
    from skinlib.study import experiments
    from skinlib.study.profiles import get_profile

    text = (ROOT / "book" / "teachers.md").read_text()

    def stated(exercise: str) -> int:
        return int(re.search(rf"^\| {re.escape(exercise)}[^|]*\| (\d+) ", text, re.M).group(1))

    assert stated("02.1") == len(paper.TABLE3_MODELS)
    assert stated("03.1") == sum(k.endswith("(pretrained)") for k in paper.TABLE2)
    params = get_profile("paper")
    config = experiments.profile_config(params)
    independent = {(c.name, c.seed, c.config_hash()) for c in experiments.independent_runs(
        config, params.seeds, pretrained=True)}
    assert stated("08.1") == len(independent) + len(params.seeds)  # + the final model's seeds
    assert stated("04.1") == len(experiments.ATTENTION_MODELS)


def test_pages_say_when_the_profile_upsamples_the_images(data_dir):
    from skinlib.book.kernel import size_note
    from skinlib.data import load_ham10000

    index = load_ham10000(data_dir)
    note = size_note(224, index)
    assert note is not None and "200x150" in note.data and "224x224" in note.data
    assert size_note(96, index) is None


def test_rendering_a_bundle_asks_for_the_pretrained_runs_it_holds(monkeypatch):
    from skinlib.models.weights import weights_available
    from skinlib.policy import ENV

    monkeypatch.setenv(ENV["pretrained_models"], "resnet18")
    assert weights_available("resnet18") and not weights_available("mobilenet_v3_small")
    monkeypatch.setenv(ENV["pretrained_models"], "")  # a bundle without pre-trained runs: none asked for
    assert not weights_available("resnet18")


def test_parameters_cells_are_generated_from_the_schema():
    """Every chapter's parameters cell is the one `skinlib notebooks parameters` writes from PARAMETERS."""
    from skinlib.book.cells import sync

    root = NOTEBOOKS[0].parents[1]
    assert sync(root, write=False) == [], "run `skinlib notebooks parameters` and commit the notebooks"


def test_a_drifted_parameters_comment_is_caught_and_rewritten(tmp_path):
    import shutil

    from skinlib.book.cells import sync

    (tmp_path / "notebooks").mkdir()
    copy = tmp_path / "notebooks" / NOTEBOOKS[1].name
    shutil.copy(NOTEBOOKS[1], copy)
    copy.write_text(copy.read_text().replace("training epochs; None", "epochs of training; None"))
    assert sync(tmp_path, write=False) == [copy.stem]
    assert sync(tmp_path, write=True) == [copy.stem] and sync(tmp_path, write=False) == []
    assert copy.read_text() == NOTEBOOKS[1].read_text()  # the rest of the notebook kept byte for byte


def test_student_handouts_leave_the_teachers_numbers_out_of_the_prose(tmp_path):
    import nbformat

    from skinlib.book.export import _read

    nb = nbformat.v4.new_notebook()
    glue = nbformat.v4.new_code_cell("glue")
    record = {"application/papermill.record/text/plain": "'49.0 %'"}
    glue.outputs = [nbformat.v4.new_output("display_data", data=record,
                                           metadata={"scrapbook": {"name": "resnet_acc", "mime_prefix": ""}})]
    nb.cells = [glue, nbformat.v4.new_markdown_cell("ResNet18 reaches {glue:text}`resnet_acc`.")]
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, path)
    teacher, student = _read(path, student=False).cells[1].source, _read(path, student=True).cells[1].source
    assert "49.0 %" in teacher
    assert "49.0" not in student and "[resnet_acc: computed when you run the chapter]" in student


def test_the_landing_page_findings_come_from_the_chapters_glued_values(tmp_path):
    import nbformat

    from skinlib.book.pages import findings_page

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("glue")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"application/papermill.record/text/plain": repr(v)},
                                           metadata={"scrapbook": {"name": k, "mime_prefix": ""}})
                    for k, v in {"ext_bacc": "23.1 [21.9, 24.4]", "ext_acc": "59.1 [57.8, 60.3]"}.items()]
    nb.cells = [cell]
    nbformat.write(nb, tmp_path / "06_final_model.ipynb")
    page = findings_page("smoke", tmp_path)
    assert "not comparable with the paper's" in page and "`bacc` 23.1 [21.9, 24.4]" in page
    assert "final model** (" not in page and "Baselines" not in page  # their values were not glued: left out
    assert "comparable with its numbers" in findings_page("paper", tmp_path)


def test_the_model_card_states_chapter_06s_numbers_or_that_it_has_none(tmp_path):
    import nbformat

    from skinlib.book.pages import MODEL_CARD_KEYS, model_card_page

    assert "no numbers to state" in model_card_page("cpu", tmp_path)
    values = {k: f"<{k}>" for k in MODEL_CARD_KEYS}
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("glue")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"application/papermill.record/text/plain": repr(v)},
                                           metadata={"scrapbook": {"name": k, "mime_prefix": ""}})
                    for k, v in values.items()]
    nb.cells = [cell]
    nbformat.write(nb, tmp_path / "06_final_model.ipynb")
    card = model_card_page("cpu", tmp_path)
    assert all(v in card for v in values.values()), [k for k, v in values.items() if v not in card]
    assert "**Not for** diagnosis" in card and "**not** the paper's scale" in card
    assert "the paper's scale;" in model_card_page("paper", tmp_path)


def test_an_image_size_a_model_refuses_stops_the_book_before_any_chapter(tmp_path, monkeypatch):
    """`skinlib book -p image_size 32`: one error naming the model, before anything is executed or deleted."""
    import skinlib.book.build as build

    executed = []
    monkeypatch.setattr(build, "execute_chapters", lambda *a, **k: executed.append(a))
    with pytest.raises(ValueError, match=r"ghostnetv2_100 needs image_size >= 64.*got 32"):
        build.build_book("smoke", params={"image_size": 32}, runs_dir=tmp_path)
    assert executed == [] and not any(tmp_path.iterdir())


def test_the_weights_note_names_only_the_missing_files_and_how_to_fetch_them(monkeypatch):
    from skinlib.book import weights_note

    models = {"ResNet18": "resnet18", "MobileNetV3": "mobilenet_v3_small"}
    monkeypatch.setenv("SKINLIB_PRETRAINED_MODELS", "resnet18")  # as when rendering a bundle with one of them
    note = weights_note(models, consequence="Nothing is trained in their place.")
    text = note.data
    assert "MobileNetV3" in text and "skinlib weights fetch mobilenet_v3_small" in text
    assert "ResNet18" not in text and "Nothing is trained in their place." in text
    monkeypatch.setenv("SKINLIB_PRETRAINED_MODELS", "resnet18,mobilenet_v3_small")
    assert weights_note(models, consequence="") is None


def test_the_pretraining_study_has_both_scratch_rows_and_the_pretrained_rows_whose_weights_are_present(monkeypatch):
    from skinlib.runs import RunConfig
    from skinlib.study.experiments import make_study

    monkeypatch.setenv("SKINLIB_PRETRAINED_MODELS", "resnet18")
    study = make_study("pretraining", RunConfig(), [0])
    assert list(study.configs) == ["ResNet18 (no pre-training)", "MobileNetV3 (no pre-training)",
                                   "ResNet18 (pre-trained)"]
    scratch = make_study("scratch", RunConfig(), [0]).configs  # the same runs as the scratch baselines'
    assert study.configs["ResNet18 (no pre-training)"] == scratch["ResNet18"]
    with pytest.raises(ValueError, match="unknown study 'nope'; valid: baselines, scratch, pretraining"):
        make_study("nope", RunConfig(), [0])


def test_papermill_and_skinlib_read_parameters_in_one_dialect(tmp_path):
    """`papermill -p pretrained true -p seeds "[0, 1]" -p lr 1e-3` means what `skinlib book -p` means, and a
    misspelled name stops the chapter instead of running it on defaults."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    params = nbformat.v4.new_code_cell(
        'from typing import Optional\n\nprofile: str = "smoke"\nepochs: "Optional[int]" = None\n'
        'pretrained: "Optional[bool]" = None\nseeds: "Optional[list]" = None\nlr: "Optional[float]" = None')
    params.metadata["tags"] = ["parameters"]
    body = nbformat.v4.new_code_cell("from skinlib.book import chapter\n\nctx = chapter(globals(), show=False)\n"
                                     "print(repr((ctx.pretrained, ctx.seeds, ctx.lr, ctx.epochs)))")
    nb = nbformat.v4.new_notebook(cells=[params, body], metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, tmp_path / "ch.ipynb")
    out = papermill.execute_notebook(str(tmp_path / "ch.ipynb"), str(tmp_path / "out.ipynb"), kernel_name="python3",
                                     parameters={"pretrained": "true", "seeds": "[0, 1]", "lr": "1e-3"},
                                     progress_bar=False)
    printed = out.cells[-1].outputs[0]["text"]
    assert printed.strip() == "(True, [0, 1], 0.001, 5)", printed
    with pytest.raises(PapermillExecutionError, match=r"unknown parameter 'epoch' for this chapter \(did you mean "
                                                      r"'epochs'\?\)"):
        papermill.execute_notebook(str(tmp_path / "ch.ipynb"), str(tmp_path / "out2.ipynb"), kernel_name="python3",
                                   parameters={"epoch": 3}, progress_bar=False)


def test_every_table_caption_is_shown_exactly_once_by_its_chapter():
    """Each caption of ``TABLES`` is used by one ``show_table(...)`` (or ``show(...)``) call of its chapter, and
    every key a chapter uses has a caption: no result table goes without a number and a caption."""
    import re

    from skinlib.book.figures import TABLES

    used: dict[str, list[str]] = {}
    for path in NOTEBOOKS:
        code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        for key in re.findall(r'show(?:_table)?\((?:[^"]|"(?!\d\d\.))*"(\d\d\.[a-z_]+)"', code, flags=re.S):
            used.setdefault(key, []).append(path.stem)
    assert set(used) == set(TABLES), set(used) ^ set(TABLES)
    for key, chapters in used.items():
        assert chapters == [next(p.stem for p in NOTEBOOKS if p.stem.startswith(key[:2]))], (key, chapters)


def test_tables_are_numbered_in_the_order_a_chapter_shows_them(monkeypatch):
    import pandas as pd

    from skinlib.book import kernel
    from skinlib.book.kernel import show_table

    monkeypatch.setattr(kernel, "_SHOWN", {})
    first = show_table(pd.DataFrame({"a <b>": [1.0, None]}), "06.runs")
    groups = [show_table(pd.DataFrame({"n": [1]}), "06.subgroups", attribute=a) for a in ("sex", "age band")]
    assert [first.number, *(g.number for g in groups)] == ["6.1", "6.2", "6.3"]
    assert show_table(pd.DataFrame(), "08.summary").number == "8.1"
    assert groups[0].caption.startswith("Who the models fail (sex)")
    html = first._repr_html_()
    assert html.count("<caption>") == 1 and "Table 6.1" in html and "a &lt;b&gt;" in html and "–" in html
    with pytest.raises(ValueError, match="no caption"):
        show_table(pd.DataFrame(), "06.nothing")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_table_a_chapter_numbers_is_shown(path):
    """``show_table`` returns the numbered table; only a cell's last expression is displayed, so a call earlier
    in a cell must be wrapped in ``display`` or the table silently vanishes from the page (and its number with
    it)."""
    import ast

    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        body = ast.parse(cell.source).body
        for statement in body[:-1]:
            call = statement.value if isinstance(statement, ast.Expr) else None
            name = getattr(getattr(call, "func", None), "id", "")
            assert name not in ("show_table", "show"), f"{path.stem}: a table that is not displayed: {cell.source[:80]}"
