"""report.html and compare.html as text: content, escaping, self-containment, bad run directories.

What a person sees in a real browser is checked in tests/test_report_browser.py.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from xml.etree import ElementTree

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import funcgrad as fg
import funcgrad.testing as fgt
from funcgrad.cli.main import main
from funcgrad.training.html_figures import trace_graph_svg
from funcgrad.training.html_report import read_run, text_diff, write_run_report
from report_fixtures import SCRIPT_REPLY, counting_run, counting_task, multihop_run


@pytest.fixture(scope="module")
def counting_dir(tmp_path_factory) -> Path:
    return counting_run(tmp_path_factory.mktemp("runs") / "counting")


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    (dst / "report.html").unlink(missing_ok=True)
    return dst


def _page(path: Path, **kw) -> str:
    return write_run_report(path, **kw).read_text()


def test_report_shows_each_verdict_reason_and_diff(counting_dir):
    page = _page(counting_dir, initial=counting_task().state)
    assert "rejected by minibatch" in page and "lost on the training minibatch (0.000 &lt; 0.500)" in page
    assert "stopped by guard too_short" in page
    assert page.count('class="badge o-accepted">accepted</span>') >= 1
    # the rejected proposal as a diff against the text it would replace, the changed words marked
    assert '<div class="ins"><span class="op">+ </span>Answer <mark>badly</mark>' in page
    # the critique of the wrong example, attributed to its node call
    assert "count#0 · ex4 (score 0.00) · critique for instruction · call 0, round 0" in page


def test_untrusted_text_is_escaped(counting_dir):
    page = _page(counting_dir)
    assert "<script" not in page  # no script element at all: the page has no code
    assert "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt; I count 7" in page
    assert SCRIPT_REPLY not in page


def test_report_is_self_contained(counting_dir):
    page = _page(counting_dir)
    refs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert refs and all(r.startswith("#") for r in refs), [r for r in refs if not r.startswith("#")]
    assert "<link" not in page and "@import" not in page and not re.search(r"url\((?!#)", page)
    assert "default-src 'none'" in page  # and the browser would refuse any fetch anyway


def test_trace_graph_has_one_element_per_record_and_repeated_calls_numbered(tmp_path):
    run = multihop_run(tmp_path / "mh")
    trace = next(r.trace for step, phase, r in read_run(run).traces if phase == "train")
    svg = trace_graph_svg(trace, prefix="g")
    assert len(re.findall(r'<g id="g-n\d+"', svg)) == len(trace.records) == 7
    assert "query#0" in svg and "query#1" in svg and "retrieve#1" in svg and ">answer<" in svg
    page = _page(run)
    assert 'data-records="7"' in page and "∇ attempt 0 · critique for query_instruction" in page


def test_curve_marks_each_proposal_by_outcome(counting_dir):
    page = _page(counting_dir)
    groups = dict(re.findall(r'<g id="outcome-(\w+)">(.*?)</g>', page, flags=re.S))
    assert {k: v.count("<use ") for k, v in groups.items()} == {"accepted": 1, "lost_minibatch": 1, "guard": 1, "no_update": 1}
    assert sum(len(e.proposals) for e in read_run(counting_dir).fit.log) == 4


def test_missing_steps_say_so_and_fall_back_to_the_checkpoint(counting_dir, tmp_path):
    run = _copy(counting_dir, tmp_path / "run")
    (run / "steps.jsonl").unlink()
    page = _page(run, initial=counting_task().state)
    assert "steps.jsonl is missing: the backward pass was not recorded" in page
    assert "Critiques not recorded" in page and "lost on the training minibatch" in page
    assert "Answer <mark>badly</mark>" in page  # the diff against the state of that step, rebuilt from the log


@pytest.mark.parametrize("name", ["checkpoint.json", "steps.jsonl", "config.json", "final_state.json"])
def test_corrupt_file_is_named_and_the_rest_still_shown(counting_dir, tmp_path, name):
    run = _copy(counting_dir, tmp_path / "run")
    (run / name).write_bytes(b'{"format": "funcgrad-checkpoint", "fit": {"step": ')
    page = _page(run)
    assert f"{name} is corrupt and was not read" in page
    assert 'data-records="' in page  # the traces still render


def test_truncated_trace_line_is_skipped_and_counted(counting_dir, tmp_path):
    run = _copy(counting_dir, tmp_path / "run")
    data = (run / "traces.jsonl").read_bytes()
    (run / "traces.jsonl").write_bytes(data[: len(data) - 40])
    view = read_run(run)
    assert view.status("traces.jsonl").message.startswith("1 unreadable line(s) skipped (line ")
    assert len(view.traces) == data.count(b"\n") - 1


def test_empty_directory_gives_a_page_saying_what_is_missing(tmp_path):
    page = _page(tmp_path)
    for name in ("config.json", "checkpoint.json", "traces.jsonl"):
        assert f"{name} is missing" in page
    assert "No readable checkpoint" in page


def test_cli_report_rebuilds_the_page_with_the_initial_prompts(counting_dir, tmp_path, capsys):
    run = _copy(counting_dir, tmp_path / "run")
    assert main(["report", str(run)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {run / 'report.html'}"
    assert (run / "report.html").exists()
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "is not a run directory" in capsys.readouterr().err


_lines = st.lists(st.text(alphabet="ab \t", max_size=8), max_size=5).map("\n".join)


@given(_lines, _lines)
def test_text_diff_holds_both_texts(old, new):
    lines = text_diff(old, new)
    assert [("".join(t for _, t in d.parts)) for d in lines if d.op != "+"] == (old.splitlines() or [""])
    assert [("".join(t for _, t in d.parts)) for d in lines if d.op != "-"] == (new.splitlines() or [""])
    assert all(not changed for d in lines if d.op == " " for changed, _ in d.parts)


def test_initial_prompts_diff_to_final(counting_dir):
    page = _page(counting_dir, initial=counting_task().state)
    final = read_run(counting_dir).fit.state["instruction"].value
    assert final == "Answer the question. Think carefully and count each item once."
    prompts = page.split('id="prompts"')[1].split('id="steps"')[0]
    assert "Think carefully and count each item once.</mark></div>" in prompts
    assert isinstance(fg.loads((counting_dir / "final_state.json").read_bytes()), fg.PromptState)


@settings(max_examples=25, deadline=None)
@given(fgt.traces())
def test_trace_graph_draws_every_record_once_and_escapes_names(trace):
    svg = trace_graph_svg(trace, prefix="p")
    assert sorted(int(i) for i in re.findall(r'<g id="p-n(\d+)"', svg)) == sorted(r.id for r in trace.records)
    assert svg.count("<a ") == len(trace.records)  # every node links to its record
    ElementTree.fromstring(svg)  # well-formed XML whatever the node names hold


def test_a_run_still_going_is_not_blamed_for_its_end_files(counting_dir, tmp_path):
    run = _copy(counting_dir, tmp_path / "run")
    doc = orjson.loads((run / "checkpoint.json").read_bytes())
    doc["fit"]["stopped"] = ""
    (run / "checkpoint.json").write_bytes(orjson.dumps(doc))
    (run / "final_state.json").unlink()
    page = _page(run)
    assert "still running (or killed): 3 step(s) checkpointed" in page
    assert "final_state.json is missing" not in page and "history.tsv is missing" not in page
    assert "Answer the question. Think carefully and count each item once." in page  # the checkpoint's prompts


def test_trace_graph_escapes_node_names():
    trace = fg.Trace((fg.Record(0, "x", "input"), fg.Record(1, "</svg><script>alert(1)</script>", "fn", inputs=(0,), input_names=("a",))))
    svg = trace_graph_svg(trace, prefix="e")
    assert "<script" not in svg and "&lt;/svg&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in svg
    ElementTree.fromstring(svg)
