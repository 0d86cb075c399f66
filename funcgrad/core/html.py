"""Small HTML views of core values, for notebooks (``_repr_html_``) and reports.

Pure functions from a value to an HTML fragment: :func:`state_html` (a
:class:`~funcgrad.core.state.PromptState`), :func:`trace_html` (a
:class:`~funcgrad.core.trace.Trace`), :func:`step_trace_html` (a
:class:`~funcgrad.core.backward.StepTrace`) and :func:`fit_html` (the result of
``fit``). Every text that comes from a prompt, a model, an example or a name is
escaped by Jinja2 (autoescape) and isolated for bidi — ``<bdi>`` inline,
``dir="auto"`` on blocks — so a reply holding ``<script>`` or a right-to-left override
shows as text and cannot reorder what is around it. Long texts are cut at
:data:`MAX_TEXT` characters, saying how many were left out. The fragments carry
their own small stylesheet (classes prefixed ``fg-``) and no script.

>>> from funcgrad.core.state import Param, PromptState
>>> html = state_html(PromptState.of(sys=Param("<script>alert(1)</script>")))
>>> "&lt;script&gt;" in html, "<script>" in html
(True, False)
"""

from __future__ import annotations

from typing import Any

import orjson

from funcgrad.core.values import thaw

MAX_TEXT = 2000  # characters of one text shown before it is cut

_STYLE = """<style>
.fg-view { font: 13px/1.4 system-ui, sans-serif; max-width: 100%; overflow-x: auto; }
.fg-view table { border-collapse: collapse; margin: 4px 0; } .fg-view td, .fg-view th { border: 1px solid #ddd; padding: 2px 6px; text-align: left; vertical-align: top; }
.fg-view th { background: #f4f4f4; } .fg-view pre { white-space: pre-wrap; word-break: break-word; margin: 0; font: 12px/1.35 ui-monospace, Menlo, Consolas, monospace; }
.fg-view .fg-muted { color: #666; } .fg-view .fg-ctrl { color: #8a4b00; } .fg-view .fg-error { color: #b00020; font-weight: 600; }
</style>"""

_MACROS = """
{% macro text(t) %}<pre dir="auto">
{{ clip(t) }}</pre>{% endmacro %}
{% macro name(n) %}<bdi>{{ n }}</bdi>{% endmacro %}
{% macro score(x) %}{{ "n/a" if x is none else "%.3f"|format(x) }}{% endmacro %}
"""

_STATE = _MACROS + """
<div class="fg-view fg-state">{{ style }}
<strong>PromptState</strong> <span class="fg-muted">{{ state.params|length }} param(s), {{ state.trainable_names|length }} trainable</span>
<table><tr><th>name</th><th>kind</th><th>trainable</th><th>role</th><th>text</th></tr>
{% for n, p in state.params %}<tr><td>{{ name(n) }}</td><td>{{ p.kind }}</td><td>{{ "yes" if p.trainable else "frozen" }}</td><td>{{ name(p.role) }}</td><td>{{ text(p.value) }}</td></tr>
{% endfor %}</table>
{% if state.groups %}<div>groups: {% for g, members in state.groups %}{{ name(g) }} = {% for m in members %}{{ name(m) }}{{ ", " if not loop.last }}{% endfor %}{{ "; " if not loop.last }}{% endfor %}</div>{% endif %}
</div>"""

_TRACE = _MACROS + """
<div class="fg-view fg-trace">{{ style }}
<strong>Trace</strong> {{ name(trace.example_id or "(no id)") }} <span class="fg-muted">{{ trace.records|length }} record(s), {{ "output %%%d"|format(trace.output) if trace.output is not none else "no output" }}{% if trace.control %} (control: {% for c in trace.control %}<a href="#fg-r{{ c }}">%{{ c }}</a>{{ ", " if not loop.last }}{% endfor %}){% endif %}{% if trace.skips %}, skip connections to {% for s in trace.skips %}{{ name(s) }}{{ ", " if not loop.last }}{% endfor %}{% endif %}</span>
<table><tr><th>id</th><th>kind</th><th>node</th><th>inputs</th><th>control</th><th>reads</th><th>request</th><th>output</th><th>tokens, s</th></tr>
{% for r in trace.records %}<tr id="fg-r{{ r.id }}"><td>%{{ r.id }}</td><td>{{ r.kind }}</td><td>{{ name(r.node) }}{% if r.kind != "input" %}#{{ r.call_index }}{% endif %}</td>
<td>{% for n, i in r.input_names|zip(r.inputs) %}{{ name(n) }}=%{{ i }}{{ ", " if not loop.last }}{% endfor %}{% for k, v in r.consts.items() %}{{ ", " if r.inputs or not loop.first }}{{ name(k) }}={{ name(short(v)) }}{% endfor %}</td>
<td class="fg-ctrl">{% for c in r.control %}<a href="#fg-r{{ c }}">%{{ c }}</a>{{ " " if not loop.last }}{% endfor %}</td>
<td>{% for p in r.params %}{{ name(p) }}{{ ", " if not loop.last }}{% endfor %}</td>
<td>{% for role, content in messages(r.request) %}<div class="fg-muted">{{ role }}</div>{{ text(content) }}{% endfor %}</td>
<td>{% if r.error is not none %}<span class="fg-error">error:</span> {{ text(r.error) }}{% else %}{{ text(show(r.output)) }}{% endif %}</td>
<td>{{ r.usage.total_tokens }}, {{ "%.2f"|format(r.usage.latency_s) }}</td></tr>
{% endfor %}</table>
</div>"""

_STEP = _MACROS + """
<div class="fg-view fg-step">{{ style }}
<strong>StepTrace</strong> step {{ st.step }}, attempt {{ st.attempt }}, {{ name(st.strategy) }}: <strong>{{ verdict(st.verdict) }}</strong>
<span class="fg-muted">minibatch {{ score(st.minibatch) }}, validation {{ score(st.val) }}; {{ st.calls|length }} call(s), {{ st.effects|length }} effect(s)</span>
{% if st.reason %}<div>{{ text(st.reason) }}</div>{% endif %}
<div class="fg-muted">batch: {% for e in st.batch %}{{ name(e) }}{{ ", " if not loop.last }}{% endfor %}</div>
{% if st.gradients %}<table><tr><th>∇</th><th>param</th><th>from node call</th><th>example</th><th>score</th><th>source</th><th>text</th></tr>
{% for g in st.gradients %}<tr><td>{{ g.id }}</td><td>{{ name(g.param) }}</td><td>{{ name(g.node) }}#{{ g.call_index }} (%{{ g.record_id }})</td><td>{{ name(g.example_id) }}</td><td>{{ score(g.score) }}</td><td>{{ g.source }}{% if g.via == "control" %} via control{% endif %}{% if g.call is not none %} (call {{ g.call }}){% endif %}</td><td>{{ text(g.text) }}</td></tr>
{% endfor %}</table>{% endif %}
{% if st.candidates %}<table><tr><th>param</th><th>from</th><th>proposed</th><th>guard</th></tr>
{% for c in st.candidates %}<tr><td>{{ name(c.param) }}</td><td>{{ text(c.old) }}</td><td>{{ text(c.value) if c.value is not none else "(no usable value)" }}</td><td>{% if c.guard %}{{ name(c.guard) }}: {{ text(c.reason) }}{% else %}passed{% endif %}</td></tr>
{% endfor %}</table>{% endif %}
</div>"""

_FIT = _MACROS + """
<div class="fg-view fg-fit">{{ style }}
<strong>Fit result</strong> <span class="fg-muted">{{ name(fit.stopped or "running") }} after {{ fit.step }} step(s)</span>
<table><tr><th>test</th><td>{{ score(fit.initial_test) }} → {{ score(fit.final_test) }}</td></tr>
<tr><th>validation (selected the proposals: optimistic)</th><td>{{ score(fit.initial_val) }} → {{ score(fit.val_score) }}</td></tr></table>
{% if fit.log %}<table><tr><th>step</th><th>train</th><th>validation</th><th>proposals</th></tr>
{% for e in fit.log %}<tr><td>{{ e.step }}</td><td>{{ score(e.train_score) }}</td><td>{{ score(e.val_score) }}</td><td>{% for p in e.proposals %}<div><strong>{{ verdict(p.verdict) }}</strong> {{ text(p.reason) }}</div>{% endfor %}</td></tr>
{% endfor %}</table>{% endif %}
<div>final prompts:</div>{{ state_view }}
</div>"""


def clip(text: Any) -> str:
    """``text`` cut to :data:`MAX_TEXT` characters, saying how many were left out.

    >>> clip("a" * 2005)[-25:]
    'aaaa… (5 more characters)'
    """
    text = "" if text is None else str(text)
    return text if len(text) <= MAX_TEXT else f"{text[:MAX_TEXT]}… ({len(text) - MAX_TEXT} more characters)"


def _show(value: Any) -> str:
    """A record's output as text: strings as they are, anything else as indented JSON."""
    if isinstance(value, str):
        return value
    return orjson.dumps(thaw(value), option=orjson.OPT_INDENT_2, default=str).decode()


def _short(value: Any) -> str:
    text = _show(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _messages(request: Any) -> list[tuple[str, str]]:
    """``(role, content)`` of a record's request (a :class:`~funcgrad.core.calls.Request`, or None)."""
    return [(m.role, _show(m.content)) for m in (request.messages if request is not None else ())]


def _verdict(value: Any) -> str:
    return str(getattr(value, "value", value))


def _render(source: str, **context: Any) -> str:
    import jinja2  # here, so that importing the core does not import the template engine
    from markupsafe import Markup

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["zip"] = zip
    page = env.from_string(source)
    return page.render(style=Markup(_STYLE), clip=clip, show=_show, short=_short, messages=_messages,
                       verdict=_verdict, **context).strip()


def state_html(state: Any) -> str:
    """A :class:`~funcgrad.core.state.PromptState` as an HTML table: name, kind, trainable, role, text."""
    return _render(_STATE, state=state)


def trace_html(trace: Any) -> str:
    """A :class:`~funcgrad.core.trace.Trace` as an HTML table, one row per record (inputs, params read, request, output).

    Data inputs and control edges (the records read for control flow) have their own
    columns; a control edge links to the row of the record it names, and the header
    lists every record the output depends on through control.

    >>> from funcgrad.core.trace import Record, Trace
    >>> html = trace_html(Trace((Record(0, "x", "input", output="\\u202eabc"),), example_id="e1", output=0))
    >>> '<pre dir="auto">\\n\\u202eabc</pre>' in html, "<bdi>e1</bdi>" in html
    (True, True)
    """
    return _render(_TRACE, trace=trace)


def step_trace_html(st: Any) -> str:
    """A :class:`~funcgrad.core.backward.StepTrace`: verdict and scores, its gradients and its candidates."""
    return _render(_STEP, st=st)


def fit_html(fit: Any) -> str:
    """The result of ``fit`` (``FitState``): test and validation scores, the step log with every verdict, the final prompts.

    Read by attribute (``step``, ``stopped``, ``initial_test``, ``final_test``,
    ``initial_val``, ``val_score``, ``log``, ``state``), so the core does not import
    the training loop that defines the class.
    """
    from markupsafe import Markup

    return _render(_FIT, fit=fit, state_view=Markup(state_html(fit.state)))
