"""compare.html in headless Chromium at 1400 px and 400 px: no overflow, figures named, config text isolated.

Like tests/test_report_browser.py: Chromium from the distribution (/usr/bin/chromium
or ``$FUNCGRAD_CHROMIUM``) driven by Playwright, marked ``browser``;
``FUNCGRAD_SHOTS=docs/img`` keeps the screenshots (compare-*.png).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from compare_fixtures import RLO_LABEL, write_grid
from funcgrad.cli.compare_page import write_compare_report
from report_fixtures import counting_run, counting_task
from funcgrad.training.html_report import write_run_report

pytestmark = pytest.mark.browser



@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Path:
    """Two tasks, three strategies (one with a long name), three seeds: the page of the screenshots."""
    arms = (("backprop", 0.25), ("whole_trace", 0.02), ("gepa_text_params_only", 0.1))
    root = write_grid(tmp_path_factory.mktemp("grid") / "grid", strategies=arms, tasks=("object_counting", "multihop"))
    return write_compare_report(root)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    """Strategy labels with a script tag and a right-to-left override; one cell with its own report."""
    root = write_grid(tmp_path_factory.mktemp("grid") / "grid")
    cell = counting_run(root / "cells" / "object_counting--backprop--seed0")
    write_run_report(cell, initial=counting_task().state)
    return write_compare_report(root)


def _open(browser, path: Path, width: int):
    page = browser.new_page(viewport={"width": width, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("request", lambda r: problems.append(r.url) if r.url != path.resolve().as_uri() else None)
    page.goto(path.resolve().as_uri())
    return page, problems


def _shot(page, name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    page.screenshot(path=str(path))
    assert ImageStat.Stat(Image.open(path).convert("L")).stddev[0] > 20, "the screenshot is (nearly) one flat colour"
    if os.environ.get("FUNCGRAD_SHOTS"):
        out = Path(os.environ["FUNCGRAD_SHOTS"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out / name)


@pytest.mark.parametrize("width", [1400, 400])
@pytest.mark.parametrize("which", ["grid", "hostile"])
def test_no_horizontal_overflow_and_every_table_reachable(browser, which, width, tmp_path, request):
    page, problems = _open(browser, request.getfixturevalue(which), width)
    assert problems == [] and page.evaluate("document.scripts.length") == 0
    assert page.evaluate("document.documentElement.scrollWidth") <= width  # the page itself never scrolls sideways
    for box in page.locator("section.task > *").all():
        assert box.bounding_box()["x"] + box.bounding_box()["width"] <= width + 0.5
    tables = page.locator("div.scroll > table")
    assert tables.count() == 3 * page.locator("section.task").count()  # arms, pairs, cost; a wide one scrolls in its own box
    header = page.locator("table.arms").first.locator("th").all_inner_texts()
    assert [h.replace("\n", " ") for h in header[:4]] == ["Strategy", "Seeds", "Test before (%)", "Test after (%)"]
    assert page.locator("table.arms tr.baseline td").first.inner_text() == "no optimization"
    if which == "grid":
        _shot(page, f"compare-{width}.png", tmp_path)
    page.close()


def test_figures_are_named_images(browser, grid, tmp_path):
    page, problems = _open(browser, grid, 1400)
    named = page.get_by_role("img", name="object_counting: paired test difference against no optimization")
    assert named.count() == 1 and named.bounding_box()["width"] > 400
    curves = page.get_by_role("img", name="multihop: validation accuracy of the kept prompts per step, every cell (one line per seed)")
    assert curves.count() == 1 and curves.bounding_box()["width"] > 400
    _shot(page.locator("section.task").first.locator("figure.curves"), "compare-curves.png", tmp_path)
    assert problems == []
    page.close()


def test_config_text_is_escaped_and_isolated(browser, hostile):
    page, problems = _open(browser, hostile, 1400)
    labels = page.locator("bdi", has_text="_whole_trace")
    assert labels.count() == 4 and {labels.nth(i).inner_text() for i in range(4)} == {RLO_LABEL}  # arms, 2 pairs, cost
    assert {labels.nth(i).evaluate("e => getComputedStyle(e).unicodeBidi") for i in range(4)} == {"isolate"}
    assert page.title() == "strategy comparison" and problems == []  # the <script> label did not run
    page.get_by_role("link", name="object_counting--backprop--seed0").click()
    assert page.title() == "counting / backprop"  # the cell's own report opens from the grid
    page.close()
