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
from report_fixtures import LONG_WORD, RTL_ID, SCRIPT_REPLY, counting_run, counting_task, multihop_run

pytestmark = pytest.mark.browser



class Visit:
    """A page opened from a file, with every console error, page error and request it made."""

    def __init__(self, browser, path: Path, width: int = 1400):
        self.url = path.resolve().as_uri()
        self.context = browser.new_context(viewport={"width": width, "height": 900})
        self.page = self.context.new_page()
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
    v.context.close()


def test_curve_renders_every_proposal(browser, counting_page, tmp_path):
    v = Visit(browser, counting_page)
    curve = v.page.locator("#curve-figure svg")
    box = curve.bounding_box()
    assert box["width"] > 400 and box["height"] > 250
    markers = {k: v.page.locator(f"#outcome-{k} use").count() for k in ("accepted", "lost_minibatch", "guard", "no_update")}
    assert markers == {"accepted": 1, "lost_minibatch": 1, "guard": 1, "no_update": 1}
    legend = v.page.locator("#curve-figure svg text", has_text="proposal: rejected by minibatch")
    assert legend.is_visible()
    body = v.page.evaluate("parseFloat(getComputedStyle(document.body).fontSize)")
    assert legend.bounding_box()["height"] >= 0.9 * body  # legend text at body size (it was 7 px)
    _shot(v.page.locator("#curve-figure"), "counting-curve.png", tmp_path)
    v.context.close()


def test_rejected_proposal_its_reason_and_diff_are_visible(browser, counting_page):
    v = Visit(browser, counting_page)
    attempt = v.page.locator("#step-1-attempt-1")
    assert attempt.locator(".badge").inner_text() == "rejected by minibatch"
    assert attempt.locator("ul.reasons li").first.inner_text() == "lost on the training minibatch (0.000 < 0.500)"
    removed, added = attempt.locator(".candidate .diff .del"), attempt.locator(".candidate .diff .ins")
    assert removed.inner_text() == "- Answer the question." and removed.is_visible()
    assert added.inner_text() == "+ Answer badly and fast." and added.is_visible()
    assert added.locator("mark").all_inner_texts() == ["badly", "and fast."]
    guard = v.page.locator("#step-1-attempt-2")
    assert guard.locator(".badge").first.inner_text() == "stopped by a guard"
    assert guard.locator(".candidate").inner_text().startswith("instruction stopped by guard too_short: the proposed value 'No.' is a stub")
    v.context.close()


def test_model_reply_with_a_script_tag_shows_as_text(browser, counting_page):
    v = Visit(browser, counting_page)
    trace = v.page.locator("details.trace-view", has_text="ex4").first
    if not trace.evaluate("d => d.open"):
        trace.locator(":scope > summary").click()
    output = trace.locator(".record.k-llm pre.output")
    assert output.inner_text() == SCRIPT_REPLY and output.is_visible()
    assert v.page.title() == "counting / backprop" and v.errors == []
    v.context.close()


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
    assert beside.count() == 1 and beside.inner_text().startswith("∇ g1 attempt 1 · critique for query_instruction")
    assert all(min(nodes.nth(i).bounding_box()["width"], nodes.nth(i).bounding_box()["height"]) > 15 for i in range(nodes.count()))
    assert v.errors == [] and v.others() == []
    _shot(view, "multihop-trace.png", tmp_path)
    v.context.close()


def test_clicking_a_trace_graph_node_jumps_to_its_record_in_the_same_page(browser, tmp_path):
    run = multihop_run(tmp_path / "multihop")
    v = Visit(browser, write_run_report(run, initial=multihop_prompts()))
    node = v.page.locator("#t0-n3 a").first
    node.scroll_into_view_if_needed()
    node.click()
    assert len(v.context.pages) == 1  # no new tab or window
    assert v.page.evaluate("location.hash") == "#t0-r3" and v.page.url == v.url + "#t0-r3"
    record = v.page.locator("#t0-r3")
    top = record.evaluate("r => r.getBoundingClientRect().top")
    assert -1 <= top < 900, top  # scrolled to it (sub-pixel rounding)
    # keyboard: a node is a link, so Enter on it follows it in the page as well
    v.page.evaluate("location.hash = ''")
    v.page.locator("#t0-n5 a").first.focus()
    v.page.keyboard.press("Enter")
    assert len(v.context.pages) == 1 and v.page.evaluate("location.hash") == "#t0-r5"
    assert v.errors == [] and v.others() == []
    v.context.close()


def test_a_lineage_link_opens_the_folded_critique_it_names(browser, counting_page):
    v = Visit(browser, counting_page)
    link = v.page.locator("table.lineage a", has_text="g1")
    target = link.get_attribute("href")
    assert not v.page.locator(target).is_visible()  # folded in its attempt's critiques
    link.click()
    assert v.page.evaluate("location.hash") == target and v.page.locator(target).is_visible()
    v.context.close()


@pytest.fixture(scope="module")
def hostile_page(tmp_path_factory) -> Path:
    run = counting_run(tmp_path_factory.mktemp("runs") / "hostile", hostile=True)
    return write_run_report(run, initial=counting_task(hostile=True).state)


def test_narrow_screen_has_no_horizontal_overflow(browser, hostile_page, counting_page, tmp_path):
    for page, name in ((hostile_page, None), (counting_page, "report-400.png")):
        v = Visit(browser, page, width=400)
        for details in v.page.locator("details").all():  # everything unfolded, long lines included
            details.evaluate("d => d.open = true")
        assert v.page.evaluate("document.documentElement.scrollWidth") <= 400
        assert v.page.get_by_text(LONG_WORD[:50]).count() > 0 or name is not None
        if name:
            v.page.evaluate("window.scrollTo(0, 0)")
            _shot(v.page, name, tmp_path)
        v.context.close()


def test_right_to_left_text_stays_inside_its_element(browser, hostile_page):
    v = Visit(browser, hostile_page)
    line = v.page.locator("#step-1 > p").first
    assert RTL_ID in line.inner_text()
    ex = line.locator("bdi", has_text="שלום")
    box = ex.bounding_box()
    # the score printed after the id is still after it, left to right: the override did not leak
    after = line.evaluate("""(p) => {
        const bdi = [...p.querySelectorAll('bdi')].find(b => b.textContent.includes('שלום'));
        const node = bdi.closest('span').nextSibling;
        const r = document.createRange(); r.setStart(node, 0); r.setEnd(node, 2);
        return r.getBoundingClientRect().left; }""")
    assert after >= box["x"] + box["width"] - 1
    assert v.page.evaluate("getComputedStyle(document.querySelector('bdi')).unicodeBidi") == "isolate"
    v.context.close()


def test_summary_answers_did_it_help(browser, counting_page, tmp_path):
    v = Visit(browser, counting_page)
    answer = v.page.locator(".answer")
    assert answer.is_visible() and answer.bounding_box()["y"] < 900  # in the first screen
    assert answer.inner_text().startswith("Test (held out, n = 2): 0.500 → 1.000\nΔ +50.0 points")
    _shot(v.page, "report-summary.png", tmp_path)
    _shot(v.page.locator("#step-1"), "report-step.png", tmp_path)
    v.context.close()


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
    v.context.close()
    narrow = Visit(browser, page, width=400)
    assert narrow.page.evaluate("document.documentElement.scrollWidth") <= 400
    _shot(narrow.page, "main-job-report-400.png", tmp_path)
    narrow.context.close()


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
    v.context.close()
