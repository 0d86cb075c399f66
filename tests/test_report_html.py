"""report.html and compare.html as text: content, escaping, self-containment, bad run directories.

What a person sees in a real browser is checked in tests/test_report_browser.py.
"""

from __future__ import annotations

import html
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
from funcgrad.training.report import difference_text, held_out_difference, held_out_pairs, report_markdown
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


def _text(page: str) -> str:
    """The page's text as a reader sees it: inline tags dropped, others a space; entities decoded, whitespace collapsed."""
    inline = re.sub(r"</?(?:bdi|a|span|mark|strong|em)\b[^>]*>", "", page)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", inline)).split())


def test_report_shows_each_verdict_reason_and_diff(counting_dir):
    page = _page(counting_dir, initial=counting_task().state)
    assert "rejected by minibatch" in page and "lost on the training minibatch (0.000 &lt; 0.500)" in page
    assert "stopped by guard too_short" in page
    assert page.count('class="badge o-accepted">accepted</span>') >= 1
    # the rejected proposal as a diff against the text it would replace, the changed words marked
    assert '<div class="ins"><span class="op">+ </span><bdi>Answer <mark>badly</mark>' in page
    # the critique of the wrong example, attributed to its node call
    assert "count#0 · ex4 (score 0.00) · critique for instruction · call 0, round 0" in _text(page)


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
    assert 'data-records="7"' in page and "∇ g1 attempt 1 · critique for query_instruction" in _text(page)


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
    assert "Think carefully and count each item once.</mark></bdi></div>" in prompts
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
    doc["fit"]["stopped"], doc["fit"]["final_test"] = "", None
    (run / "checkpoint.json").write_bytes(orjson.dumps(doc))
    (run / "final_state.json").unlink()
    lines = (run / "traces.jsonl").read_bytes().splitlines(keepends=True)
    (run / "traces.jsonl").write_bytes(b"".join(x for x in lines if orjson.loads(x)["step"] != 3 or orjson.loads(x)["phase"] != "test"))
    page = _page(run)
    assert "still running (or killed): 3 step(s) checkpointed" in page
    assert "No paired difference yet: the final test evaluation runs when the run ends." in page
    assert "final_state.json is missing" not in page and "history.tsv is missing" not in page
    assert "Answer the question. Think carefully and count each item once." in page  # the checkpoint's prompts


def test_trace_graph_escapes_node_names():
    trace = fg.Trace((fg.Record(0, "x", "input"), fg.Record(1, "</svg><script>alert(1)</script>", "fn", inputs=(0,), input_names=("a",))))
    svg = trace_graph_svg(trace, prefix="e")
    assert "<script" not in svg and "&lt;/svg&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in svg
    ElementTree.fromstring(svg)


# ---------------------------------------------------------------- issue 24: what a researcher opens a run for


def test_the_page_opens_with_the_paired_test_difference_as_report_md_states_it(counting_dir):
    view = read_run(counting_dir)
    text = _text(_page(counting_dir))
    d = held_out_difference(held_out_pairs(view.traces))
    assert (d.n_examples, d.diff, (d.wins, d.ties, d.losses)) == (2, 0.5, (1, 1, 0))
    answer = text.split("Did it help?")[1].split("Learning curve")[0]
    assert answer.startswith(f" Test (held out, n = 2): 0.500 → 1.000 {difference_text(d)} The interval includes 0")
    assert "validation (the selection set, n = 2): 0.500 -> 1.000; these examples chose the proposals" in answer
    md = report_markdown(view.fit, counting_task().state, title="t", usage=None, wall_s=None, traces=view.traces)
    assert f"- test (held out, n = 2): 0.500 -> 1.000; {difference_text(d)}" in md.splitlines()


def test_test_examples_pair_before_and_after_as_text_changed_rows_first(counting_dir):
    page = _page(counting_dir)
    section = page.split('id="examples"')[1].split('id="lineage"')[0]
    rows = [[_text(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S)]
            for row in re.findall(r'<tr id="test-\d+".*?</tr>', section, flags=re.S)]
    # ex8 went from the <script> reply's "7" to the right "5": first, as a win; ex9 unchanged, folded below it
    assert rows == [["ex8", "How many items in box #5", "5", "0.000 7", "1.000 5", "win"],
                    ["ex9", "How many items in box #2", "2", "1.000 2", "1.000 2", "tie"]]
    assert section.index("1 unchanged example(s)") > section.index('id="test-0"')


def test_every_cross_reference_is_a_link_to_an_element_of_the_page(counting_dir):
    page = _page(counting_dir)
    ids = set(re.findall(r'\bid="([^"]+)"', page))
    hrefs = set(re.findall(r'href="#([^"]+)"', page))
    assert hrefs - ids == set()
    assert 'target="' not in page  # no link opens another page
    lineage = _text(page.split('id="lineage"')[1].split('id="prompts"')[0])
    assert "instruction initial the task final step 2, attempt 1 call 2 g0 (ex4, count#0); g1 (ex2, count#0)" in lineage
    for ref in ("#step-2", "#step-2-attempt-1", "#step-2-attempt-1-call-2", "#step-2-attempt-1-g1", "#t3-r1"):
        assert f'href="{ref}"' in page.split('id="lineage"')[1].split('id="prompts"')[0], ref


def test_outcomes_and_attempt_numbers_agree_on_the_page_in_report_md_and_in_show(counting_dir, capsys):
    from funcgrad.core.backward import format_step_trace
    from funcgrad.training.rundir import read_steps

    view, page = read_run(counting_dir), _page(counting_dir)
    md = report_markdown(view.fit, counting_task().state, title="t", usage=None, wall_s=None, steps=read_steps(counting_dir))
    on_page = re.findall(r'<div class="attempt o-\w+" id="step-(\d+)-attempt-(\d+)">\s*<h4>Attempt (\d+): <span class="badge o-\w+">([^<]+)</span>', page)
    in_md = re.findall(r"### Step (\d+), attempt (\d+): (.+)", md)
    in_show = [(str(st.step), str(st.attempt + 1), format_step_trace(st).splitlines()[0].split("; ")[2].split(":")[0]) for st in read_steps(counting_dir)]
    assert [(s, k, label) for s, k, n, label in on_page if n == k] == in_md == in_show
    assert in_md == [("1", "1", "rejected by minibatch"), ("1", "2", "stopped by a guard"), ("2", "1", "accepted"), ("3", "1", "no update")]
    assert main(["show", str(counting_dir), "--step", "1", "--limit", "0"]) == 0
    out = capsys.readouterr().out
    assert "step 1 attempt 2 (backprop): batch ex1, ex0; 2 calls in 2 rounds; stopped by a guard\n" in out
    assert "  candidate instruction from g1 [c1]: stopped by guard too_short: " in out  # as the page names it
    assert out.count("the proposed value 'No.' is a stub") == 1  # on the candidate's line only


def test_each_reason_is_shown_once(counting_dir):
    page = re.sub(r"<details class=\"calls\">.*?</details>", "", _page(counting_dir), flags=re.S)  # the optimizer's prompts quote them
    text = _text(page)
    assert text.count("the proposed value 'No.' is a stub") == 1
    assert text.count("lost on the training minibatch (0.000 < 0.500)") == 1
    assert "no update: no update" not in text and "all 2 examples scored >= tau (0.99): no noticeable error" in text


def test_a_dropped_critique_says_why(tmp_path):
    run = counting_run(tmp_path / "hostile", hostile=True)
    text = _text(_page(run))
    assert "critique dropped: too generic (it names no concrete mistake): 'Be more specific.'; the downstream feedback was passed on instead" in text
    assert "critique for instruction" not in text


def test_unscored_proposals_are_not_drawn_at_a_score(counting_dir):
    page = _page(counting_dir)
    ys = {k: re.findall(r'<use [^>]*y="([\d.]+)"', v) for k, v in re.findall(r'<g id="outcome-(\w+)">(.*?)</g>', page, flags=re.S)}
    assert ys["guard"] == ys["no_update"] and ys["guard"] != ys["lost_minibatch"]  # both in the "not scored" strip
    assert "not scored" in page and "test (start and end)" in page


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def test_badges_meet_the_wcag_aa_contrast_for_their_white_text():
    from funcgrad.core.backward import OUTCOME_LABELS

    css = (Path(fg.__file__).parent / "training" / "templates" / "base.html.j2").read_text()
    colours = dict(re.findall(r"\.o-(\w+) \{ background: (#[0-9a-fA-F]{6}); \}", css))
    assert set(colours) == set(OUTCOME_LABELS)
    ratios = {k: (1.05) / (_luminance(c) + 0.05) for k, c in colours.items()}
    assert {k: r for k, r in ratios.items() if r < 4.5} == {}, ratios


def test_figures_have_titles_and_text_alternatives(counting_dir):
    page = _page(counting_dir)
    svgs = re.findall(r"<svg [^>]*>\s*<title>([^<]+)</title><desc>([^<]+)</desc>", page)
    assert len(svgs) == page.count("<svg ") == 1 + len([t for t in read_run(counting_dir).traces if t[1] == "train"])
    assert svgs[0][0] == "Learning curve and model calls per step" and "4 proposals (1 accepted, 1 rejected by minibatch" in svgs[0][1]


def test_time_per_phase_and_per_call_is_shown(counting_dir):
    section = _text(_page(counting_dir).split('id="time"')[1].split('id="usage"')[0])
    calls = sum(1 for st in read_run(counting_dir).steps for c in st.calls if c.request.role == "optimizer")
    assert f"optimizer {calls} 0.00 s 0.00 s 0.00 s" in section and "mean per call" in section  # scripted answers take no time
    assert "so the sums exceed the wall time (2 s)" in section  # wall.json: 1.5 s


def test_funcgrad_report_uses_the_initial_state_stored_in_the_run(counting_dir, tmp_path, capsys):
    run = _copy(counting_dir, tmp_path / "run")
    assert main(["report", str(run)]) == 0
    assert "Think carefully and count each item once.</mark>" in (run / "report.html").read_text()
    (run / "initial_state.json").unlink()
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert "initial_state.json is missing (the run was started by a funcgrad that did not write it)" in page
    assert "<mark>" not in page.split('id="prompts"')[1].split('id="steps"')[0]


def test_show_failing_prints_only_the_examples_that_failed_or_scored_below_1(counting_dir, capsys):
    assert main(["show", str(counting_dir), "--failing", "--limit", "1000"]) == 0
    heads = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[step ")]
    failing = [r for _, _, r in read_run(counting_dir).traces if r.failed or r.loss.score < 1]
    assert len(heads) == len(failing) > 0 and all(" score 0.00: " in h for h in heads)


def test_each_evaluation_of_a_candidate_gets_its_own_table(counting_dir, tmp_path):
    run = _copy(counting_dir, tmp_path / "run")
    lines = (run / "traces.jsonl").read_bytes().splitlines(keepends=True)
    val = [line for line in lines if orjson.loads(line)["phase"] == "val" and orjson.loads(line)["step"] == 2]
    assert len(val) == 2
    (run / "traces.jsonl").write_bytes(b"".join(lines) + b"".join(val))  # a second candidate scored at step 2
    text = _text(_page(run))
    assert "val, step 2, evaluation 1 of 2: 2 example(s), mean score 1.000" in text
    assert "val, step 2, evaluation 2 of 2: 2 example(s), mean score 1.000" in text
    assert "val, step 0: 2 example(s), mean score 0.500" in text
