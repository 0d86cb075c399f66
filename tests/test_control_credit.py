"""Control credit in backprop: a record the pipeline read to decide what to run next gets feedback
about what its decision caused (``control_credit=True``, the default), marked ``via="control"``.

Forward runs use a ScriptedEngine answering by node (a table, not a parser); critic and
optimizer answers are fed to the program directly (tests/test_strategies.py's ``Answers``).
"""

from __future__ import annotations

import re
from xml.etree import ElementTree

import attrs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funcgrad import (
    LLM, ConfigError, Example, Gradient, Param, PromptState, StepContext, StepTrace, exact_match, fn, format_step_trace,
    from_data, run_batch, run_program, to_data,
)
from funcgrad.engines.scripted import ScriptedEngine
from funcgrad.strategies import backprop, backward
from funcgrad.strategies.backprop import BackpropKnobs
from funcgrad.strategies.whole_trace import WholeTraceKnobs, problem_text
from funcgrad.training.html_figures import control_edges, trace_graph_svg
from tests.test_strategies import Answers

classify = LLM("classify", system=("classify_sys",), user="ticket: {input}")
reclassify = LLM("classify", system=("classify_sys",), user="ticket: {input}\nnot: {label}")
review = LLM("review", system=("review_sys",), user="ticket: {input}\nlabel: {label}")

STATE = PromptState.of(classify_sys=Param("Label the ticket: billing, bug or feature."),
                       review_sys=Param("Reply confirm if the label fits the ticket, else change."))
EXAMPLES = (Example("t1", "I was charged twice.", "billing"), Example("t2", "The app crashes on start.", "bug"))


def review_loop(prompts, x):
    """classify, then at most two review rounds; the loop stops when the review confirms."""
    label = classify(prompts, input=x)
    for _ in range(2):
        verdict = review(prompts, input=x, label=label)
        if verdict == "confirm":  # a control read: nothing consumes the verdict's Var
            break
        label = reclassify(prompts, input=x, label=label)
    return label


def engine(labels=("bug",), verdicts=("confirm",)):
    """classify answers ``labels`` in turn (the last one repeats); review answers ``verdicts`` in turn, per example."""
    def respond(request):
        user = request.messages[-1].content
        seen = [r for r in eng.requests if r.messages[-1].content.split("\n")[0] == user.split("\n")[0]]
        if "label:" in user:
            n = sum("label:" in r.messages[-1].content for r in seen) - 1
            return verdicts[min(n, len(verdicts) - 1)]
        n = sum("label:" not in r.messages[-1].content for r in seen) - 1
        return labels[min(n, len(labels) - 1)]

    eng = ScriptedEngine(respond, concurrency=1)
    return eng


def results_of(pipeline=review_loop, labels=("bug",), verdicts=("confirm",), examples=EXAMPLES[:1], state=STATE):
    return run_batch(pipeline, state, examples, engine=engine(labels, verdicts), loss=exact_match)


def critic_prompts(requests, node):
    return [r.messages[-1].content for r in requests if f"step `{node}`" in r.messages[-1].content]


def stripped(results):
    """The results with every control field emptied: what a run recorded before control edges existed."""
    def strip(trace):
        return attrs.evolve(trace, control=(), records=tuple(attrs.evolve(r, control=()) for r in trace.records))
    return [attrs.evolve(res, trace=strip(res.trace)) for res in results]


# ---------------------------------------------------------------- the stop-deciding node gets credit


def test_the_pipeline_records_the_review_as_a_control_read():
    (res,) = results_of()
    assert [r.node for r in res.trace.records] == ["x", "classify", "review", "loss"]
    assert res.trace.control == (2,) and res.trace.output == 1 and res.loss.score == 0.0


@pytest.mark.parametrize("credit", [True, False])
def test_a_stop_deciding_review_with_no_data_consumer_gets_a_critic_call_only_with_control_credit(credit):
    results = results_of()
    grads, requests, counts = run_program(backward(results, STATE, BackpropKnobs(control_credit=credit)), Answers())
    reviews = [g for g in grads if g.param == "review_sys"]
    assert len(critic_prompts(requests, "review")) == int(credit)
    assert len(critic_prompts(requests, "classify")) == 1
    assert [(g.node, g.record_id, g.source, g.via) for g in reviews] == ([("review", 2, "critique", "control")] if credit else [])
    assert counts.events.get("control_feedback", 0) == int(credit)


def test_control_feedback_says_the_loop_stopped_and_the_output_did_not_change():
    _, requests, _ = run_program(backward(results_of(), STATE, BackpropKnobs()), Answers())
    (prompt,) = critic_prompts(requests, "review")
    assert ("1. (control) The pipeline read this answer to decide what to run next. The run stopped right after this "
            "decision: no further step was called. The final output did not change after it: 'bug'. The run ended "
            "with score 0.00: wrong: expected 'billing'") in prompt


def test_control_feedback_names_the_calls_that_followed_and_the_output_change():
    results = results_of(labels=("bug", "feature"), verdicts=("change", "confirm"))
    trace = results[0].trace
    assert [f"{r.node}#{r.call_index}" for r in trace.records[1:-1]] == ["classify#0", "review#0", "classify#1", "review#1"]
    assert trace.control == (2, 4) and trace.output == 3
    _, requests, _ = run_program(backward(results, STATE, BackpropKnobs()), Answers())
    first, last = critic_prompts(requests, "review")[::-1]  # the walk goes backwards: review#1 is judged first
    assert "you judge call #0" in first and "you judge call #1" in last
    assert ("After this decision 2 more model call(s) ran: classify#1, review#1. The final output changed after it, "
            "from 'bug' to 'feature'.") in first
    assert "The run stopped right after this decision" in last and "did not change after it: 'feature'" in last
    clipped = run_program(backward(results, STATE, BackpropKnobs(max_calls_listed=1)), Answers())[1]
    assert "ran: classify#1 (+1 more)." in critic_prompts(clipped, "review")[-1]


def test_a_repeated_output_value_is_no_change():
    results = results_of(labels=("bug", "bug"), verdicts=("change", "confirm"))
    _, requests, _ = run_program(backward(results, STATE, BackpropKnobs()), Answers())
    assert "2 more model call(s) ran: classify#1, review#1. The final output did not change after it: 'bug'." in \
        critic_prompts(requests, "review")[-1]


@fn("pick")
def pick(text):
    return text.upper()


def late_output(prompts, x):
    """The review runs first; the output is made after its decision."""
    verdict = review(prompts, input=x, label="none")
    return pick(classify(prompts, input=x)) if verdict == "confirm" else pick(verdict)


def test_an_output_made_after_the_decision_is_said_so():
    results = results_of(late_output)
    _, requests, _ = run_program(backward(results, STATE, BackpropKnobs()), Answers())
    assert "After this decision 1 more model call(s) ran: classify#0. The final output 'BUG' was produced after it." in critic_prompts(requests, "review")[0]


def test_a_record_in_both_data_and_control_paths_gets_one_call_with_both_feedbacks():
    @fn("tidy")
    def tidy(text):
        return text.strip()

    def pipeline(prompts, x):
        label = classify(prompts, input=x)
        if label:  # a control read of the record that tidy consumes next
            return tidy(label)
        return tidy("none")

    results = results_of(pipeline)
    assert results[0].trace.control == (1,) and results[0].trace.records[2].inputs == (1,)
    grads, requests, _ = run_program(backward(results, STATE, BackpropKnobs()), Answers())
    (prompt,) = critic_prompts(requests, "classify")
    assert len(requests) == 1
    assert "1. (control) The pipeline read this answer" in prompt and "No model call ran after this decision: only tidy#0 finished the run." in prompt
    assert "2. wrong: expected 'billing'" in prompt  # the loss feedback through tidy, after the decision's feedback
    assert [(g.param, g.via) for g in grads] == [("classify_sys", "data")]  # data feedback too: not control alone


def test_a_fn_read_for_control_passes_the_feedback_to_the_llm_that_produced_its_input():
    @fn("verdict_of")
    def verdict_of(text):
        return text.split()[0]

    def pipeline(prompts, x):
        label = classify(prompts, input=x)
        if verdict_of(review(prompts, input=x, label=label)) != "confirm":
            label = reclassify(prompts, input=x, label=label)
        return label

    results = results_of(pipeline)
    assert results[0].trace.control == (3,) and results[0].trace.records[3].node == "verdict_of"
    grads, requests, _ = run_program(backward(results, STATE, BackpropKnobs()), Answers(backward="not json"))
    assert "The run stopped right after this decision" in critic_prompts(requests, "review")[0]
    # the critique was unusable: the control feedback itself becomes the gradient, source control
    (g,) = [g for g in grads if g.param == "review_sys"]
    assert g.source == "control" and g.via == "control" and g.text.startswith("(control) The pipeline read")


def test_a_passing_example_gets_the_fixed_gradient_without_a_call():
    results = results_of(labels=("billing",))
    grads, requests, _ = run_program(backward(results, STATE, BackpropKnobs()), Answers())
    assert requests == ()
    # classify's fixed gradient is data: besides review's feedback (control) it gets the loss feedback (data)
    assert [(g.param, g.source, g.via) for g in grads] == [("classify_sys", "fixed", "data"), ("review_sys", "fixed", "control")]
    update, _ = run_program(backprop().update(results, STATE, backprop().init(STATE), StepContext()), Answers())
    assert not update.values and {n.param for n in update.notes} == {"classify_sys", "review_sys"}


def test_without_control_credit_requests_and_gradients_equal_those_of_a_trace_without_control():
    results = [*results_of(labels=("bug", "feature"), verdicts=("change", "confirm")), *results_of(examples=EXAMPLES[1:])]
    assert any(res.trace.control for res in results)
    off, plain = backprop(control_credit=False), backprop()
    a, b = Answers(), Answers()
    update_a, s_a = run_program(off.update(results, STATE, off.init(STATE), StepContext()), a)
    update_b, s_b = run_program(plain.update(stripped(results), STATE, plain.init(STATE), StepContext()), b)
    assert a.effects == b.effects and len(a.effects) == 3  # classify#1, classify#0 (through review's (inputs)), optimizer
    assert update_a == update_b and s_a == s_b
    assert {g.via for g in update_a.gradients} == {"data"}


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(("bug", "billing", "feature")), min_size=1, max_size=3),
       st.lists(st.sampled_from(("change", "confirm")), min_size=1, max_size=2), st.booleans())
def test_every_review_of_a_failing_run_is_judged_once_with_control_credit_and_never_without(labels, verdicts, errors_only):
    results = results_of(labels=tuple(labels), verdicts=tuple(verdicts))
    trace, failing = results[0].trace, results[0].loss.score < 1.0
    reviews = [r.id for r in trace.records if r.node == "review"]
    assert trace.control == tuple(reviews)  # every verdict is read; none is consumed
    on = BackpropKnobs(errors_only=errors_only)
    grads, requests, _ = run_program(backward(results, STATE, on), Answers())
    judged = failing or not errors_only
    assert len(critic_prompts(requests, "review")) == (len(reviews) if judged else 0)
    assert sorted(g.record_id for g in grads if g.param == "review_sys") == reviews
    assert {g.via for g in grads if g.param == "review_sys"} == {"control"}
    off = attrs.evolve(on, control_credit=False)
    grads_off, requests_off, _ = run_program(backward(results, STATE, off), Answers())
    assert not critic_prompts(requests_off, "review") and not any(g.param == "review_sys" for g in grads_off)
    assert (grads_off, requests_off) == run_program(backward(stripped(results), STATE, on), Answers())[:2]


def test_the_knob_is_validated():
    assert backprop().config["control_credit"] is True and backprop(control_credit=False).config["control_credit"] is False
    with pytest.raises(ConfigError, match=r"^strategy 'backprop': 'control_credit' must be <class 'bool'> \(got 'no' that is a <class 'str'>\)\.$"):
        backprop(control_credit="no")


def live_control_prompts() -> list[str]:
    """Critic prompts that reach every branch of the control feedback (for tests/test_strategies.py's live prompts)."""
    @fn("tidy")
    def tidy(text):
        return text.strip()

    def fn_after(prompts, x):
        label = classify(prompts, input=x)
        return tidy(label) if label else tidy("none")

    runs = [results_of(labels=("bug", "feature"), verdicts=("change", "confirm")),
            results_of(labels=("bug", "bug"), verdicts=("change", "confirm")), results_of(late_output), results_of(fn_after)]
    texts = [m.content for results in runs for r in run_program(backward(results, STATE, BackpropKnobs()), Answers())[1]
             for m in r.messages]
    return [*texts, problem_text(runs[0], STATE, WholeTraceKnobs(), StepContext())[0]]


def test_every_control_template_reaches_a_live_prompt():
    from funcgrad.strategies.prompts import _phrases, control, whole_trace

    texts = live_control_prompts()
    templates = (*control.TEMPLATES, whole_trace.DOC_CONTROL, whole_trace.CONTROL_STOP)
    phrases = [p for t in templates for p in _phrases(t)]
    assert len(phrases) >= len(templates) and [p for p in phrases if not any(p in t for t in texts)] == []


# ---------------------------------------------------------------- the step trace


def test_control_gradients_are_marked_in_the_step_trace_and_round_trip():
    grads, _, _ = run_program(backward(results_of(), STATE, BackpropKnobs()), Answers())
    st = StepTrace(1, 0, "backprop", ("t1",), gradients=grads)
    lines = format_step_trace(st).splitlines()
    assert [line.split("]")[0].split("[")[1] for line in lines[1:]] == ["critique c1", "critique c0 ctrl"]
    assert from_data(orjson.loads(orjson.dumps(to_data(st)))) == st


def test_a_gradient_written_before_the_via_field_loads_as_data():
    data = to_data(Gradient(0, "sys", "answer", "e1", 1, 0, 0.0, "x", "passthrough"))
    del data["via"]
    assert from_data(data).via == "data"
    with pytest.raises(Exception, match="gradient via 'sideways' is not one of: data, control"):
        from_data({**data, "via": "sideways"})


# ---------------------------------------------------------------- whole_trace shows the control reads


def test_whole_trace_code_shows_the_control_reads():
    results = results_of(labels=("bug", "feature"), verdicts=("change", "confirm"))
    body, _, _ = problem_text(results, STATE, WholeTraceKnobs(), StepContext())
    code = body.split("#Code\n")[1].split("\n#Inputs")[0]
    assert code == ("y1 = classify(classify_sys, input=y0)\n"
                    "y2 = review(review_sys, input=y0, label=y1)\n"
                    "# read y2\n"
                    "y3 = classify(classify_sys, input=y0, label=y1)\n"
                    "y4 = review(review_sys, input=y0, label=y3)\n"
                    "# read y4, then no further step was called")
    assert "- # read ...: the program read these values to decide what to run next" in body
    plain, _, _ = problem_text(stripped(results), STATE, WholeTraceKnobs(), StepContext())
    assert "# read" not in plain and plain == body.replace("# read y2\n", "").replace(
        "\n# read y4, then no further step was called", "").replace(
        "- # read ...: the program read these values to decide what to run next (an if, a loop's stop test).\n", "")
    cut, _, _ = problem_text(results, STATE, WholeTraceKnobs(max_records=3), StepContext())
    assert "# read y2\ny3 = classify" in cut and "then no further step" not in cut  # the end is not shown


# ---------------------------------------------------------------- drawn and printed differently from data edges


def test_the_trace_graph_draws_control_edges_dashed_with_a_legend_and_a_text_alternative():
    trace = results_of(labels=("bug", "feature"), verdicts=("change", "confirm"))[0].trace
    assert control_edges(trace) == ((2, 3), (4, 5))  # review#0 -> classify#1; review#1 -> the loss (nothing ran after it)
    svg = trace_graph_svg(trace, prefix="t")
    ElementTree.fromstring(svg)
    groups = dict(re.findall(r'<g id="t-c(\d+-\d+)">(.*?)</g>', svg, flags=re.S))
    assert sorted(groups) == ["2-3", "4-5"]
    assert all("stroke-dasharray" in body and "stroke: #e69f00" in body for body in groups.values())
    edges = svg.split('<g id="t-n')[0]  # edges are drawn before the nodes
    data = [body for gid, body in re.findall(r'<g id="(patch_\d+)">(.*?)</g>', edges, flags=re.S) if "#777777" in body]
    assert len(data) == sum(len(r.inputs) for r in trace.records) and not any("stroke-dasharray" in b for b in data)
    assert ">data edge<" in svg and ">control edge<" in svg
    desc = re.search(r"<desc>(.*?)</desc>", svg).group(1)
    assert desc.endswith("Control edges (dashed; the run read the first value to decide what ran next): "
                         "review#0 -&gt; classify#1, review#1 -&gt; loss.")
    plain = trace_graph_svg(stripped([results_of(labels=("bug", "feature"), verdicts=("change", "confirm"))[0]])[0].trace,
                            prefix="t")
    assert "t-c" not in plain and "control edge" not in plain and "Control edges" not in plain


def test_step_trace_views_and_funcgrad_show_name_control_gradients(tmp_path, capsys):
    from funcgrad.cli.main import main
    from funcgrad.core.html import step_trace_html
    from funcgrad.training.driver import drive

    results = results_of()
    critic = ScriptedEngine(lambda r: "not json" if r.role == "backward" else "<NEW_VALUE>Reply confirm only if the label fits.</NEW_VALUE>")
    done = drive(backprop().update(results, STATE, backprop().init(STATE), StepContext()), strategy="backprop", critic=critic)
    update, _ = done.value
    st = StepTrace(1, 0, "backprop", ("t1",), calls=done.calls, effects=done.effects, gradients=update.gradients,
                   candidates=update.candidates)
    assert [(g.param, g.source, g.via) for g in st.gradients] == [("classify_sys", "passthrough", "data"),
                                                                  ("review_sys", "control", "control")]
    assert "<td>control via control (call 0)</td>" in step_trace_html(st)
    (tmp_path / "steps.jsonl").write_bytes(orjson.dumps(to_data(st)) + b"\n")
    (tmp_path / "traces.jsonl").write_bytes(orjson.dumps({"step": 1, "phase": "train", "result": to_data(results[0])}) + b"\n")
    assert main(["show", str(tmp_path), "--step", "1"]) == 0
    out = capsys.readouterr().out
    assert "g1 review_sys <- review#0 %2 of t1 (score 0.00) [control c0 ctrl]: '(control) The pipeline read" in out
    assert "g0 classify_sys <- classify#0 %1 of t1 (score 0.00) [passthrough c1]:" in out
