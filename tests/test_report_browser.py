"""report.html in a real headless browser: what a person would see.

Chromium from the distribution (``apt-get install chromium``, at /usr/bin/chromium or
``$FUNCGRAD_CHROMIUM``), driven by Playwright; Playwright never downloads a browser
here. Marked ``browser``: ``python -m pytest -m "not browser"`` skips them.

``FUNCGRAD_SHOTS=DIR`` keeps the screenshots in DIR (docs/img holds the ones in the
docs); ``FUNCGRAD_MAIN_RUN=RUN_DIR`` also checks (and screenshots) the report of a
real main-job run directory; ``FUNCGRAD_MULTIHOP_RUN=RUN_DIR`` the trace view of a real
multihop run (examples/multihop_trace.toml).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from funcgrad.tasks.multihop import initial_state as multihop_prompts
from funcgrad.training.html_report import read_run, write_run_report
from report_fixtures import SCRIPT_REPLY, counting_run, counting_task, multihop_run

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("FUNCGRAD_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set FUNCGRAD_CHROMIUM), "
                    'or skip these tests with -m "not browser"')
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Visit:
    """A page opened from a file, with every console error, page error and request it made."""

    def __init__(self, browser, path: Path, width: int = 1280):
        self.url = path.resolve().as_uri()
        self.page = browser.new_page(viewport={"width": width, "height": 900})
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(self.url)

    def others(self) -> list[str]:
        """Requests beyond loading the file itself."""
        return [u for u in self.requests if u != self.url]


def _shot(locator, name: str, tmp_path: Path) -> Path:
    """Screenshot ``locator`` (or a page's viewport) to tmp_path (and FUNCGRAD_SHOTS, if set); assert it is not blank."""
    path = tmp_path / name
    locator.screenshot(path=str(path))
    image = Image.open(path).convert("L")
    assert image.width > 300 and image.height > 200, image.size
    assert ImageStat.Stat(image).stddev[0] > 20, "the screenshot is (nearly) one flat colour"
    if os.environ.get("FUNCGRAD_SHOTS"):
        out = Path(os.environ["FUNCGRAD_SHOTS"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out / name)
    return path


@pytest.fixture(scope="module")
def counting_page(tmp_path_factory) -> Path:
    run = counting_run(tmp_path_factory.mktemp("runs") / "counting")
    return write_run_report(run, initial=counting_task().state)


def test_page_loads_offline_without_errors(browser, counting_page):
    v = Visit(browser, counting_page)
    assert v.errors == [] and v.others() == []
    assert v.page.title() == "counting / backprop"  # the model's <script> did not run
    assert v.page.evaluate("document.scripts.length") == 0
    v.page.close()


def test_curve_renders_every_proposal(browser, counting_page, tmp_path):
    v = Visit(browser, counting_page)
    curve = v.page.locator("#curve-figure svg")
    box = curve.bounding_box()
    assert box["width"] > 400 and box["height"] > 250
    markers = {k: v.page.locator(f"#outcome-{k} use").count() for k in ("accepted", "lost_minibatch", "guard", "no_update")}
    assert markers == {"accepted": 1, "lost_minibatch": 1, "guard": 1, "no_update": 1}
    assert v.page.locator("#curve-figure svg text", has_text="proposal: rejected by minibatch").is_visible()
    _shot(v.page.locator("#curve-figure"), "counting-curve.png", tmp_path)
    v.page.close()


def test_rejected_proposal_its_reason_and_diff_are_visible(browser, counting_page):
    v = Visit(browser, counting_page)
    attempt = v.page.locator("#step-1-attempt-0")
    assert attempt.locator(".badge").inner_text() == "rejected by minibatch"
    assert attempt.locator(".verdict").inner_text().startswith("lost on the training minibatch (0.000 < 0.500)")
    removed, added = attempt.locator(".candidate .diff .del"), attempt.locator(".candidate .diff .ins")
    assert removed.inner_text() == "- Answer the question." and removed.is_visible()
    assert added.inner_text() == "+ Answer badly and fast." and added.is_visible()
    assert added.locator("mark").all_inner_texts() == ["badly", "and fast."]
    guard = v.page.locator("#step-1-attempt-1")
    assert guard.locator(".badge").first.inner_text() == "stopped by a guard"
    assert guard.locator(".candidate").inner_text().startswith("instruction stopped by guard too_short: the proposed value 'No.' is a stub")
    v.page.close()


def test_model_reply_with_a_script_tag_shows_as_text(browser, counting_page):
    v = Visit(browser, counting_page)
    trace = v.page.locator("details.trace-view", has_text="ex4").first
    if not trace.evaluate("d => d.open"):
        trace.locator(":scope > summary").click()
    output = trace.locator(".record.k-llm pre.output")
    assert output.inner_text() == SCRIPT_REPLY and output.is_visible()
    assert v.page.title() == "counting / backprop" and v.errors == []
    v.page.close()


def test_multihop_trace_graph_shows_the_node_called_twice(browser, tmp_path):
    run = multihop_run(tmp_path / "multihop")
    page = write_run_report(run, initial=multihop_prompts())
    trace = next(r.trace for _, phase, r in read_run(run).traces if phase == "train")
    v = Visit(browser, page, width=1100)
    view = v.page.locator("details.trace-view").first
    nodes = view.locator("svg g[id^='t0-n']")
    assert nodes.count() == len(trace.records) == 7
    labels = [t.strip() for t in view.locator("svg g[id^='t0-n'] text").all_text_contents()]
    assert [lbl.split()[0] for lbl in labels] == ["x", "query#0", "retrieve#0", "query#1", "retrieve#1", "answer", "loss"]
    assert "∇1" in labels[3]  # the second call of query got its own gradient
    beside = view.locator("#t0-r3 .gradient")
    assert beside.count() == 1 and beside.inner_text().startswith("∇ attempt 0 · critique for query_instruction")
    assert all(min(nodes.nth(i).bounding_box()["width"], nodes.nth(i).bounding_box()["height"]) > 15 for i in range(nodes.count()))
    assert v.errors == [] and v.others() == []
    _shot(view, "multihop-trace.png", tmp_path)
    v.page.close()


@pytest.mark.skipif(not os.environ.get("FUNCGRAD_MAIN_RUN"), reason="set FUNCGRAD_MAIN_RUN=RUN_DIR to check a real main-job report")
def test_main_job_report(browser, tmp_path):
    run = Path(os.environ["FUNCGRAD_MAIN_RUN"])
    page = run / "report.html"
    view = read_run(run)
    v = Visit(browser, page)
    assert v.errors == [] and v.others() == []
    points = v.page.locator("#curve-figure g[id^='outcome-'] use").count()
    assert points == sum(len(e.proposals) for e in view.fit.log)
    assert v.page.locator("details.trace-view").count() == sum(1 for _, phase, _ in view.traces if phase == "train")
    _shot(v.page, "main-job-report.png", tmp_path)  # what the page opens with: summary and curve
    if view.fit.log:
        _shot(v.page.locator("section.step").first, "main-job-step.png", tmp_path)
    _shot(v.page.locator("details.trace-view").first, "main-job-trace.png", tmp_path)
    v.page.close()


@pytest.mark.skipif(not os.environ.get("FUNCGRAD_MULTIHOP_RUN"), reason="set FUNCGRAD_MULTIHOP_RUN=RUN_DIR to check a real multihop run's report")
def test_real_multihop_trace_view(browser, tmp_path):
    """A real multihop run (examples/multihop_trace.toml, or a cell of examples/compare_multihop.toml): its first training trace, query called per hop."""
    run = Path(os.environ["FUNCGRAD_MULTIHOP_RUN"])
    trace = next(r.trace for _, phase, r in read_run(run).traces if phase == "train")
    v = Visit(browser, run / "report.html", width=1100)
    assert v.errors == [] and v.others() == []
    view = v.page.locator("details.trace-view").first
    if not view.evaluate("d => d.open"):
        view.locator(":scope > summary").click()
    nodes = view.locator("svg g[id^='t0-n']")
    assert nodes.count() == len(trace.records)
    labels = [t.strip().split()[0] for t in view.locator("svg g[id^='t0-n'] text").all_text_contents()]
    assert "query#0" in labels and "query#1" in labels, labels
    _shot(view, "multihop-real-trace.png", tmp_path)
    v.page.close()
