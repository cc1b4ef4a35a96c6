"""The built smoke book, read like a reader reads it: in headless Chromium.

Marked ``book``: it needs the built book (it builds it when absent, about 10
minutes) and Chromium. CI runs it after ``make book`` with ``pytest -m book``.
"""

from __future__ import annotations

import html
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from skinlib.book.build import build_book
from skinlib.book.notebooks import CHAPTERS

pytestmark = pytest.mark.book

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PAPER_NUMBERS = ["93.39", "86.35", "2.29", "91.48", "84.23", "91.38", "84.25", "88.88", "78.63", "91.29", "83.42",
                 "90.88", "83.44", "89.88", "80.67", "87.17", "73.71"]


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        if os.environ.get("SKINLIB_REQUIRE_BROWSER"):
            pytest.fail("Chromium is required (SKINLIB_REQUIRE_BROWSER is set) but not installed")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    return exe


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    if not (HTML / "index.html").is_file():
        build_book("smoke")
    return HTML


def render(url: str, tmp: Path, *, screenshot: Path | None = None, height: int = 2000) -> str:
    """The DOM after Chromium has loaded the page (scripts run); a fresh profile per call."""

    def cmd() -> list[str]:
        profile = tempfile.mkdtemp(dir=tmp)
        return [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size=1280,{height}",
                "--virtual-time-budget=10000"]

    if screenshot is not None:
        subprocess.run([*cmd(), f"--screenshot={screenshot}", url], capture_output=True, timeout=120, check=True)
    for _ in range(3):  # a headless start now and then returns a partial page; try again
        proc = subprocess.run([*cmd(), "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True)
        if "</body>" in proc.stdout:
            return proc.stdout
    raise AssertionError(f"Chromium returned no complete page for {url}: {proc.stderr[-500:]}")


def _stderr(dom: str) -> str:
    found = re.search(r'output stderr.{0,600}', dom, re.S)
    return re.sub(r"<[^>]+>", "", found.group(0))[:400] if found else ""


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value and ((tag == "a" and name == "href") or (tag == "img" and name == "src")):
                self.targets.append(value)


def test_index_and_every_chapter_load_with_table_and_figure(book, tmp_path):
    dom = render((book / "index.html").as_uri(), tmp_path)
    refresh = re.search(r'http-equiv="Refresh" content="0; url=([^"]+)"', dom)
    if refresh:  # Jupyter Book's index.html forwards to the root page
        dom = render((book / refresh.group(1)).as_uri(), tmp_path)
    assert "skinlib" in dom and "Chapters" in dom
    for name in CHAPTERS:
        page = book / "book" / "executed" / f"{name}.html"
        dom = render(page.as_uri(), tmp_path)
        assert "<h1" in dom, name
        assert "<table" in dom, f"{name} shows no table"
        assert re.search(r'<img[^>]+src="[^"]*_images/[^"]+\.png"', dom), f"{name} shows no figure"
        assert "output traceback" not in dom and "highlight-ipythontb" not in dom, f"{name} shows an error output"
        assert "not comparable" in dom, f"{name} lacks the smoke-profile note"
        assert "Values used:" in dom, f"{name} does not state the parameter values it ran with"
        # nb_output_stderr: show, so any warning would be printed on the page: there must be none
        assert "output stderr" not in dom, f"{name} prints a warning: {_stderr(dom)}"
        # no machine paths in the published page (the folders reach the notebooks through the environment)
        for path in {str(ROOT), str(ROOT.parent / "shared"), os.path.expanduser("~")} - {"/", ""}:
            assert path not in dom, f"{name} publishes the machine path {path}"
        # every exercise has a hint and a solution, both folded until the reader opens them
        folded = re.findall(r'<div class="dropdown (tip )?admonition toggle toggle-hidden"', dom)
        assert len(folded) >= 4 and len(folded) % 2 == 0, f"{name}: {len(folded)} folded hints/solutions"
        assert "Solution to exercise 1" in dom and "install skinlib" not in dom  # the install cell is hidden
        # one folded setup cell opens the chapter (the parameter cells are in the downloadable notebook only)
        assert "tag_parameters" not in dom and "tag_injected-parameters" not in dom, f"{name}: parameter cells shown"
        # every figure of a chapter is numbered, captioned and described (alt text, not a file name)
        images = re.findall(r'<img[^>]*src="[^"]*_images/[0-9a-f]{64}\.png"[^>]*>', dom)
        figures = re.findall(r'<figure[^>]*>\s*<img[^>]*alt="([^"]+)"[^>]*>.*?<figcaption>(.*?)</figcaption>', dom,
                             re.S)
        assert images and len(figures) == len(images), f"{name}: {len(images) - len(figures)} figures uncaptioned"
        for alt, caption in figures:
            assert not re.fullmatch(r"[0-9a-f]{64}(\.png)?", alt) and len(alt) > 20, f"{name}: alt text {alt!r}"
            assert re.search(r"Fig\. \d+", caption), f"{name}: an unnumbered caption {caption[:80]!r}"
    dom = render((book / "book" / "teachers.html").as_uri(), tmp_path)
    assert "Time per exercise" in dom and "SKINLIB_RUNS_DIR" in dom


LAYOUT_PROBE = """<script>
window.addEventListener('load', () => {
  const column = document.querySelector('article.bd-article') || document.querySelector('main');
  const right = column.getBoundingClientRect().right;
  const tables = [...document.querySelectorAll('table')].map((t) => ({
    head: [...t.querySelectorAll('th')].slice(0, 3).map((c) => c.innerText).join(' | '),
    beyond: t.getBoundingClientRect().right > right + 1,
    scrolls: t.parentElement.scrollWidth > t.parentElement.clientWidth + 1,
    truncated: [...t.querySelectorAll('td, th')].some((c) => /^(\\.\\.\\.|…)$/.test(c.innerText.trim())
                                                          || /\\.\\.\\.$/.test(c.innerText.trim())),
  }));
  document.body.setAttribute('data-layout', JSON.stringify({
    page: document.documentElement.scrollWidth > window.innerWidth + 1, tables: tables}));
});
</script>"""


def test_tables_fit_the_text_column_untruncated(book, tmp_path):
    """Measured by Chromium at 1280 px: no table is wider than the text column or scrolls sideways in its
    box, no page scrolls sideways, and no cell is cut short by pandas (``...``)."""
    import html as html_lib
    import json

    for name in CHAPTERS:
        page = book / "book" / "executed" / f"{name}.html"
        text = page.read_text()
        numbers = re.findall(r'<caption><span class="caption-number">Table (\d+\.\d+) </span>', text)
        assert len(numbers) == text.count('<table class="dataframe'), f"{name}: a table without a caption"
        assert numbers == [f"{int(name[:2])}.{i}" for i in range(1, len(numbers) + 1)], (name, numbers)
        probe = page.with_name(f".probe-{name}.html")  # beside the page, so its relative links resolve
        probe.write_text(page.read_text().replace("</body>", LAYOUT_PROBE + "</body>"))
        try:
            dom = render(probe.as_uri(), tmp_path)
        finally:
            probe.unlink()
        found = re.search(r'data-layout="([^"]*)"', dom)
        assert found, f"{name}: the layout probe did not run"
        layout = json.loads(html_lib.unescape(found.group(1)))
        assert not layout["page"], f"{name}: the page scrolls sideways"
        for table in layout["tables"]:
            assert not (table["beyond"] or table["scrolls"]), f"{name}: table [{table['head']}] overflows"
            assert not table["truncated"], f"{name}: table [{table['head']}] has truncated cells"


def test_no_broken_internal_links(book):
    broken = []
    for page in book.rglob("*.html"):
        parser = Links()
        parser.feed(page.read_text(encoding="utf-8"))
        for target in parser.targets:
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            path = target.split("#")[0].split("?")[0]
            if path and not (page.parent / path).resolve().exists():
                broken.append(f"{page.relative_to(book)} -> {target}")
    assert not broken, broken[:20]


def test_reproduction_page_has_the_paper_numbers_and_a_screenshot(book, tmp_path):
    page = book / "book" / "executed" / "08_reproduction.html"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / "08_reproduction.png"
    dom = render(page.as_uri(), tmp_path, screenshot=shot, height=4200)
    missing = [n for n in PAPER_NUMBERS if n not in dom]
    assert not missing, f"paper numbers missing from the reproduction page: {missing}"
    assert "ours top-1 %" in dom and "ours eq. 8 %" in dom and "±" in dom, \
        "our numbers (mean ± sd), in both readings, stand beside the paper's"
    assert shot.is_file() and shot.stat().st_size > 20_000


def test_second_build_retrains_nothing(book):
    result = build_book("smoke")
    assert result.trained == [], f"a rebuild retrained {result.trained}"
    assert len(result.reused) > 0 and (HTML / "index.html").is_file()


def _glued(chapter: str, root: Path) -> dict[str, str]:
    import nbformat

    from skinlib.book.export import glued_values

    return glued_values(nbformat.read(root / "book" / "executed" / f"{chapter}.ipynb", as_version=4))


def _text_outputs(chapter: str, root: Path = ROOT) -> list[str]:
    """Every text output (plain, HTML, Markdown) of an executed chapter, in order, except latency tables
    and values (timed afresh on every render) and the chapter's heading notes (profile, data source)."""
    import nbformat

    nb = nbformat.read(root / "book" / "executed" / f"{chapter}.ipynb", as_version=4)
    texts = []
    for cell in nb.cells:
        if "chapter(globals())" in cell.source:  # the heading notes: where the data came from is said there
            continue
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            glued = str(out.get("metadata", {}).get("scrapbook", {}).get("name", ""))
            if "latency" in glued or "speed" in glued or "_ms" in glued:
                continue
            texts += [str(data[k]) for k in ("text/plain", "text/html", "text/markdown")
                      if k in data and "latency" not in str(data[k]) and " ms" not in str(data[k])]
            if out.get("output_type") == "stream":
                texts.append(out.get("text", ""))
    return texts


def test_a_results_bundle_renders_the_same_numbers_without_training(book, tmp_path):
    """Pack the smoke runs into a fresh clone's results/, render it there with the publishing workflow's
    command, an empty run store and no data: nothing trains, no weights, no images but the bundle's, the same
    outputs as the book built here from the runs and the data."""
    from skinlib.study.bundles import pack_profile, read_bundle
    from tests.pages_workflow import build_command

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", "--local", str(ROOT), str(clone)], check=True)
    os.utime(clone / "pyproject.toml", (0, 0))  # older than this .venv's stamp: make installs nothing
    packed = pack_profile("smoke", out=clone / "results" / "smoke")
    assert packed.bytes < 10 * 2**20 and len(read_bundle(packed.path)["runs"]) == len(packed.runs)
    # committed, as a published bundle is: a clean tree has a commit for the launch buttons to pin
    subprocess.run(["git", "-C", str(clone), "add", "results"], check=True)
    subprocess.run(["git", "-C", str(clone), "-c", "user.name=test", "-c", "user.email=test@example.org", "commit",
                    "--quiet", "--allow-empty", "-m", "the bundle packed here"], check=True)
    store = tmp_path / "fresh-store"
    command = shlex.split(build_command().replace('"$PROFILE"', "smoke"))
    # no data anywhere: the data directory named does not exist, no ISIC folder, a fresh image cache
    env = {**{k: v for k, v in os.environ.items() if k != "SKINLIB_ISIC2018_TEST_DIR"},
           "SKINLIB_RUNS_DIR": str(store), "SKINLIB_DATA_DIR": str(tmp_path / "no-data"),
           "SKINLIB_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([*command, f"VENV={ROOT / '.venv'}"], cwd=clone, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "runs trained by this build: 0 (none)" in proc.stderr
    assert not (tmp_path / "no-data").exists() and not (clone / "data").exists()  # nothing was downloaded
    served = [p for p in (clone / "_build" / "html").rglob("*") if p.suffix in (".ipynb", ".html", ".md", ".txt")]
    leaks = [p.name for p in served if str(tmp_path) in p.read_text(errors="replace")]
    assert not leaks, f"pages or downloads name this machine's folders: {leaks}"
    data_page = (clone / "_build" / "html" / "book" / "executed" / "01_data.html").read_text()
    assert "Data from the results bundle" in data_page and "CC BY-NC 4.0" in data_page
    assert not any((p / "best.pt").exists() for p in store.iterdir() if p.is_dir())  # no weights were needed
    for chapter in CHAPTERS:
        assert _text_outputs(chapter, clone) == _text_outputs(chapter), f"{chapter} renders other outputs"
    landing = (clone / "_build" / "html" / "book" / "intro.html").read_text()
    assert "Where these numbers come from" in landing and "results bundle" in landing and "cpu" in landing
    assert "had no data" in landing
    page = (clone / "_build" / "html" / "book" / "executed" / "02_baselines.html").read_text()
    repo = "skinlib/skinlib"
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout.strip()
    # the buttons open the code of the commit the page was built from, not the branch's latest
    assert f"https://colab.research.google.com/github/{repo}/blob/gh-pages/_launch/02_baselines.ipynb" in page
    pinned = (clone / "_build" / "html" / "_launch" / "02_baselines.ipynb").read_text()  # what Colab opens
    assert f"git+https://github.com/{repo}@{commit}" in pinned and "@main" not in pinned
    assert f"https://mybinder.org/v2/gh/{repo}/{commit}?urlpath=lab/tree/notebooks/02_baselines.ipynb" in page
    assert "book/executed/02_baselines.ipynb" not in page.replace("_sources/book/executed", "")


def test_a_partial_bundle_renders_and_names_what_it_lacks(book, tmp_path):
    """A bundle without one run (as a GPU window that did not finish leaves it) renders every chapter that does
    not need the run as usual; the chapters that do say which runs are missing and how to make them."""
    from skinlib.study.bundles import pack_runs, profile_runs
    from skinlib.study.profiles import get_profile

    finished = profile_runs(get_profile("smoke")).finished
    dropped = next(r for r in finished if r.config.model == "efficientnet_b0")
    partial = pack_runs([r for r in finished if r is not dropped], tmp_path / "partial", profile="smoke",
                        missing=[f"{dropped.config.name} seed 0"]).path
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", "--local", str(ROOT), str(clone)], check=True)
    build_book("smoke", root=clone, runs_dir=tmp_path / "store", from_results=partial)
    executed = clone / "_build" / "html" / "book" / "executed"
    for chapter in ("01_data", "04_attention", "05_losses"):  # they never ask for the EfficientNet run
        assert _text_outputs(chapter, clone) == _text_outputs(chapter), f"{chapter} renders other outputs"
    page = (executed / "02_baselines.html").read_text()
    assert "is not in the" in page and dropped.config.name in page and "gpu_window.py" in page
    assert "Lightweight baselines" in page  # the chapter keeps its title and overview
    # what does not need the run is still there: the exercises' computed answers, the prose's other values
    full, part = (_glued("02_baselines", root) for root in (ROOT, clone))
    assert part["sol_02_2_bacc"] == full["sol_02_2_bacc"] and f"{full['sol_02_2_bacc']}" in page
    assert "best_bacc" not in part and "not in the bundle" in page  # a value built on the missing run is absent
    # the baselines' table keeps every bundled row and blanks only the missing one (issue 30)
    shown = re.search(r"Table 2\.1 </span>.*?</table>", page, flags=re.S)
    assert shown and "not in the bundle" in shown.group(0) and "ResNet18" in shown.group(0)


def test_the_smoke_models_learn(book):
    """The smoke profile's MobileNetV3-Small beats chance (bacc 1/7) clearly, and its runs' curves rise."""
    from skinlib.paper import TABLE3_MODELS
    from skinlib.study.bundles import no_training, profile_runs
    from skinlib.study.experiments import baseline_study, profile_config
    from skinlib.study.profiles import get_profile

    params = get_profile("smoke")
    with no_training():
        study = baseline_study(profile_config(params), params.seeds).train()
    label = next(k for k, v in TABLE3_MODELS.items() if v == "mobilenet_v3_small")
    bacc = study.runs[label][0].metrics()["test"]["bacc"]
    assert bacc >= 0.30, f"smoke MobileNetV3-Small test bacc {bacc:.3f} < 0.30"
    runs = profile_runs(params).finished
    rising = [r for r in runs if r.history()["val_bacc"].max() > r.history()["val_bacc"].iloc[0] + 0.05]
    assert len(rising) >= 0.9 * len(runs), f"only {len(rising)} of {len(runs)} runs' validation bacc rose"


def test_export_chapters_for_handing_in(book, tmp_path):
    """Executed chapters as standalone HTML (images embedded), notebooks, and PDF printed by Chromium."""
    import nbformat

    from skinlib.book.export import export_chapters, glued_values

    pages = export_chapters(["all"], to="html", out=tmp_path)
    assert [p.stem for p in pages] == list(CHAPTERS)
    for page in pages:  # every chapter's glued numbers are filled into its prose, none left as a role
        text = page.read_text()
        glued = glued_values(nbformat.read(ROOT / "book" / "executed" / f"{page.stem}.ipynb", as_version=4))
        assert glued and "{glue" not in text and "{doc}" not in text, page.stem
        readable = html.unescape(re.sub(r"<[^>]+>", "", text))  # code spans rendered: compare the words
        shown = [k for k, v in glued.items() if v in text or v.replace("`", "") in readable]
        assert len(shown) >= 0.8 * len(glued), f"{page.stem}: glued values missing: {set(glued) - set(shown)}"
        assert "Solution to exercise 1" in text and "<details>" in text
    text = (tmp_path / "02_baselines.html").read_text()
    assert "data:image/png;base64," in text and "MobileNetV3" in text and "/root/" not in text
    [student] = export_chapters(["02_baselines"], to="html", out=tmp_path / "student", student=True)
    assert "Hint to exercise 1" in student.read_text() and "Solution to exercise" not in student.read_text()
    assert len(export_chapters(["all"], to="ipynb", out=tmp_path)) == len(CHAPTERS)
    chromium()
    [pdf] = export_chapters(["01_data"], to="pdf", out=tmp_path)
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 50_000
    with pytest.raises(ValueError, match="valid: all, 01_data"):
        export_chapters(["99_none"], to="html", out=tmp_path)
    with pytest.raises(ValueError, match="valid: html, ipynb, pdf"):
        export_chapters(["01_data"], to="docx", out=tmp_path)


def test_every_computed_solution_holds(book):
    """The answers the solution cells glued into the built chapters, recomputed here independently."""
    import nbformat
    import numpy as np

    from skinlib import cli
    from skinlib.book.export import glued_values
    from skinlib.models import create_model
    from skinlib.models.attention import CaCo, coord_attention_parameters
    from skinlib.study import experiments
    from skinlib.study.profiles import get_profile

    def glued(chapter: str) -> dict[str, str]:
        return glued_values(nbformat.read(ROOT / "book" / "executed" / f"{chapter}.ipynb", as_version=4))

    g = glued("02_baselines")  # a model predicting nv and mel only
    sens = np.array([110 / 170, 1.0, 0, 0, 0, 0, 0])
    pos, fp = np.array([170, 900, 90, 40, 210, 40, 35]), np.array([0, 475, 0, 0, 0, 0, 0])
    n = pos.sum()
    spec = 1 - fp / (n - pos)
    assert g["sol_02_2_bacc"] == f"{100 * sens.mean():.1f} %"
    assert g["sol_02_2_paper"] == f"{100 * ((sens + spec) / 2).mean():.1f} %"
    g = glued("04_attention")
    widths = [m.ca.conv_h.out_channels for m in create_model("mobilenet_v3_small_caco").modules()
              if isinstance(m, CaCo)]
    changed = [c for c in widths if max(8, c // 16) != max(8, c // 32)]
    assert g["sol_04_2_changed"] == ", ".join(map(str, changed))
    assert g["sol_04_2_r16"] == f"{sum(coord_attention_parameters(c, reduction=16) for c in widths):,}"
    g = glued("05_losses")
    command = g["sol_05_1_command"].strip("`")
    config = cli.config_from_args(cli.build_parser().parse_args(shlex.split(command)[1:]))
    params = get_profile("smoke")
    study_ce = experiments.loss_study(experiments.profile_config(params), params.seeds).configs["CE"]
    wanted = experiments.variant(study_ce, loss="0.5*cb+0.5*focal(gamma=1)")
    assert config.identity() == wanted.identity() and config.sampler == "random"
    assert glued("07_efficiency")["sol_07_2_head"] == f"{576 * 1024 + 1024 + 1024 * 1000 + 1000:,}"


def test_documented_commands_copy_as_written_and_the_papermill_ones_run(book, tmp_path):
    """What a reader copies from the rendered reproduce and teachers pages is, command for command, what their
    sources say (checked as written by tests/test_documented_commands.py); and the papermill commands, which
    need neither the data nor a GPU, exit 0 in a scratch copy without data (each renders the committed bundle),
    except one that changes what is trained, which stops with how to get the data."""
    from tests.documented import FENCE, block_commands

    for page in ("reproduce", "teachers"):
        dom = render((book / "book" / f"{page}.html").as_uri(), tmp_path)
        blocks = [html.unescape(re.sub(r"<[^>]+>", "", b)) for b in re.findall(r"<pre[^>]*>(.*?)</pre>", dom, re.S)]
        shown = [c for b in blocks for c in block_commands(b)]
        source = (ROOT / "book" / f"{page}.md").read_text(encoding="utf-8")
        assert shown == [c for block in FENCE.findall(source) for c in block_commands(block)], page
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", "--local", str(ROOT), str(clone)], check=True)
    env = {**os.environ, "SKINLIB_DATA_DIR": str(tmp_path / "no-data"), "SKINLIB_RUNS_DIR": str(tmp_path / "runs"),
           "SKINLIB_CACHE_DIR": str(tmp_path / "cache"), "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}
    source = (ROOT / "book" / "reproduce.md").read_text(encoding="utf-8")
    commands = [c for block in FENCE.findall(source) for c in block_commands(block) if c.startswith("papermill ")]
    assert len(commands) >= 3
    renders = ("profile", "seeds", "n_boot")  # parameters a bundle can answer; any other one asks for training
    for command in commands:
        words = shlex.split(command)
        done = subprocess.run(words, cwd=clone, env=env, capture_output=True, text=True, timeout=600)
        if all(words[i + 1] in renders for i, w in enumerate(words) if w == "-p"):
            assert done.returncode == 0, f"{command}: {done.stderr[-2000:]}"
            executed = (clone / words[2]).read_text()  # no data: the bundle, and the chapter says so
            assert "Data from the results bundle" in executed and "profile**" in executed, command
        else:  # it trains: without the data it stops and says how to get it
            assert done.returncode != 0 and "get them with `skinlib data download`" in done.stderr, command
