"""Notebook views: PromptState, Trace, StepTrace and fit's result render as escaped, bidi-isolated HTML."""

from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import funcgrad as fg
from funcgrad.core.html import MAX_TEXT, clip
from train_fixtures import hint_strategy, respond, tiny_task

RLO = "\u202e"
HOSTILE = f"<script>alert(1)</script></textarea><img src=x onerror=alert(2)>{RLO}evil"
VOID = {"meta", "br", "img", "hr", "input", "link"}


class _Elements(HTMLParser):
    """Every element opened, and the open elements around each text holding a right-to-left override."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, dict]] = []
        self.tags: list[str] = []
        self.rlo_parents: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag not in VOID:
            self.stack.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1][0] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data):
        if RLO in data:
            self.rlo_parents.append(self.stack[-1])


def check(html: str, shown: int) -> None:
    """``html`` is balanced, holds no element from the hostile text, and isolates each of the ``shown`` RLO texts."""
    p = _Elements()
    p.feed(html)
    p.close()
    assert p.stack == []
    assert not {"script", "textarea", "img"} & set(p.tags), p.tags
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;/textarea&gt;&lt;img src=x onerror=alert(2)&gt;" in html
    assert len(p.rlo_parents) == shown
    for tag, attrs in p.rlo_parents:
        assert tag == "bdi" or (tag == "pre" and attrs.get("dir") == "auto"), (tag, attrs)


def hostile_pipeline(prompts, x):
    return ANSWER(prompts, input=x)


ANSWER = fg.LLM("answer", system=("sys",), user="{input}", max_tokens=8)


def test_prompt_state_renders_escaped_and_isolated():
    state = fg.PromptState.of(sys=fg.Param(HOSTILE, role=HOSTILE), other=fg.Param("Be brief.", trainable=False, kind="format"))
    state = fg.PromptState(state.params, groups={f"g{RLO}": ("sys", "other")})
    html = state._repr_html_()
    check(html, shown=3)  # value, role, group name
    assert "<td><bdi>other</bdi></td><td>format</td><td>frozen</td>" in html
    assert "2 param(s), 1 trainable" in html


def test_trace_renders_requests_and_outputs_escaped():
    state = fg.PromptState.of(sys=fg.Param(HOSTILE))
    _, trace = fg.run(hostile_pipeline, state, HOSTILE, engine=fg.ScriptedEngine(lambda r: HOSTILE), example_id=f"ex{RLO}1")
    html = trace._repr_html_()
    check(html, shown=5)  # example id; the input record; the llm call: system and user messages, output
    assert "<strong>Trace</strong> <bdi>ex\u202e1</bdi>" in html and "2 record(s), output %1" in html
    assert html.count('<tr id="fg-r') == 2 and '<div class="fg-muted">system</div>' in html


def test_step_trace_renders_gradients_candidates_and_verdict():
    st = fg.StepTrace(
        step=2, attempt=1, strategy=f"s{RLO}", batch=("e1",), verdict="lost_minibatch", reason=HOSTILE, minibatch=0.25,
        gradients=(fg.Gradient(0, "sys", "answer", "e1", 1, 0, 0.0, HOSTILE, call=0),),
        candidates=(fg.Candidate("sys", "old text", HOSTILE, gradients=(0,), call=1),
                    fg.Candidate("sys", "old text", None, guard="too_short", reason=HOSTILE)),
    )
    html = st._repr_html_()
    check(html, shown=5)  # strategy, reason, gradient text, candidate value, guard reason
    assert "step 2, attempt 1" in html and "<strong>lost_minibatch</strong>" in html and "minibatch 0.250, validation n/a" in html
    assert "critique (call 0)" in html and "(no usable value)" in html and "<bdi>too_short</bdi>:" in html


def test_fit_result_renders_scores_log_and_final_prompts():
    task = tiny_task()
    out = fg.fit(task, hint_strategy(first_try_bad=True), engine=fg.ScriptedEngine(respond),
                 settings=fg.FitSettings(steps=1, batch_size=2))
    html = out._repr_html_()
    assert f"<td>{out.initial_test:.3f} → {out.final_test:.3f}</td>" in html and "<bdi>done</bdi> after 1 step(s)" in html
    assert html.count("<strong>no_val_gain</strong>") == 1 and html.count("<strong>accepted</strong>") == 1
    assert "Answer the question. Think carefully." in html and "PromptState" in html  # the final prompts
    hostile = fg.FitState(0, fg.PromptState.of(sys=fg.Param(HOSTILE)), None, 0.5, 0.5, None, stopped=HOSTILE)
    check(hostile._repr_html_(), shown=2)  # stopped, the prompt


def test_long_text_is_cut_saying_how_much():
    assert clip("x" * (MAX_TEXT + 3000)).endswith("… (3000 more characters)")
    html = fg.PromptState.of(sys=fg.Param("y" * 5000))._repr_html_()
    assert "y" * MAX_TEXT + "… (3000 more characters)</pre>" in html and "y" * (MAX_TEXT + 1) not in html


@pytest.mark.parametrize("view", ["state", "trace"])
def test_the_fragment_has_no_script_and_scoped_styles(view):
    state = fg.PromptState.of(sys=fg.Param("x"))
    value = state if view == "state" else fg.run(hostile_pipeline, state, "q", engine=fg.ScriptedEngine(lambda r: "a"))[1]
    html = value._repr_html_()
    assert "<script" not in html and html.startswith('<div class="fg-view')
    styles = html[html.index("<style>") + 7: html.index("</style>")]
    assert all(line.startswith(".fg-view") for line in styles.strip().splitlines())


class _PreTexts(HTMLParser):
    """The text inside each <pre> element as a browser reads it: entities decoded, a newline right after <pre> dropped."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.texts: list[str] = []
        self._in = self._fresh = False

    def handle_starttag(self, tag, attrs):
        if tag == "pre":
            self._in = self._fresh = True
            self.texts.append("")

    def handle_endtag(self, tag):
        self._in = self._in and tag != "pre"

    def handle_data(self, data):
        if self._in:
            self.texts[-1] += data[1:] if self._fresh and data.startswith("\n") else data
            self._fresh = False


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.sampled_from("<>&\"'/ ab\u202e\u202c\u200f\n\t=!-"), max_size=MAX_TEXT + 20))
def test_any_param_text_reads_back_from_its_view_exactly(text):
    """Escaping loses nothing: the browser's reading of the <pre> is the (clipped) text itself, leading newline included."""
    p = _PreTexts()
    p.feed(fg.PromptState.of(sys=fg.Param(text))._repr_html_())
    assert p.texts == [clip(text)]
