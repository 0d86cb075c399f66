"""Readable text for traces and states (``funcgrad show`` prints these).

>>> from funcgrad.core.trace import Record, Trace
>>> print(format_trace(Trace((Record(0, "x", "input", output="hi"),), example_id="e1", output=0)))
trace e1: 1 record, output %0
  %0 = input x  -> 'hi'
"""

from __future__ import annotations

from funcgrad.core.state import PromptState
from funcgrad.core.trace import Record, Trace
from funcgrad.core.values import thaw


def _short(value, width: int) -> str:
    text = repr(thaw(value)) if not isinstance(value, str) else repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def escape_line(text: str) -> str:
    """``text`` on one line: unprintable characters (newlines...) escaped as in repr.

    >>> escape_line("a\\nb")
    'a\\\\nb'
    """
    return text if text.isprintable() else repr(text)[1:-1]


def format_record(record: Record, *, width: int = 80) -> str:
    """One line per record: ``%3 = llm query#0(question=%0, facts='(none yet)') ctrl %2 reads [p] -> 'text'``.

    Var inputs (data edges) show as ``name=%id``, constant inputs as ``name=value``
    (shortened); ``ctrl %a %b`` after the call names the records read for control
    flow since the previous record (control edges).

    >>> print(format_record(Record(2, "query", "llm", inputs=(0,), input_names=("question",), consts={"facts": "(none yet)"})))
    %2 = llm query#0(question=%0, facts='(none yet)')  -> None
    >>> print(format_record(Record(5, "review", "llm", call_index=1, inputs=(4,), input_names=("label",), control=(3,))))
    %5 = llm review#1(label=%4) ctrl %3  -> None
    """
    args = ", ".join(
        [f"{n}=%{i}" for n, i in zip(record.input_names, record.inputs)]
        + [f"{escape_line(n)}={_short(v, 40)}" for n, v in record.consts.items()]
    )
    stamp = f"#{record.call_index}" if record.kind in ("llm", "fn", "retrieve") else ""
    node = escape_line(record.node)
    call = f"{node}{stamp}({args})" if record.kind != "input" else node
    if record.control:
        call += " ctrl " + " ".join(f"%{c}" for c in record.control)
    reads = f" reads [{', '.join(record.params)}]" if record.params else ""
    tokens = record.usage.total_tokens
    cost = f" [{tokens} tok, {record.usage.latency_s:.2f}s]" if tokens else ""
    if record.error is not None:
        result = f"  !! error: {escape_line(record.error[:width])}"
    else:
        result = f"  -> {_short(record.output, width)}"
    return f"%{record.id} = {record.kind} {call}{reads}{cost}{result}"


def format_trace(trace: Trace, *, width: int = 80) -> str:
    """The whole trace, one record a line, with a header naming example and output.

    Repeated calls of one node show their call index (``query#0``, ``query#1``); the
    header names the records read for control flow, on which the output depends.

    >>> t = Trace((Record(0, "x", "input", output="q"), Record(1, "check", "fn", inputs=(0,), input_names=("s",), output="OK")),
    ...           output=0, control=(1,))
    >>> print(format_trace(t))
    trace (no id): 2 records, output %0 (ctrl %1)
      %0 = input x  -> 'q'
      %1 = fn check#0(s=%0)  -> 'OK'
    """
    n = len(trace.records)
    head = f"trace {escape_line(trace.example_id) or '(no id)'}: {n} record{'s' if n != 1 else ''}"
    head += f", output %{trace.output}" if trace.output is not None else ", no output"
    if trace.control:
        head += f" (ctrl {', '.join(f'%{c}' for c in trace.control)})"
    if trace.skips:
        head += f", skip connections to {', '.join(escape_line(s) for s in trace.skips)}"
    return "\n".join([head] + ["  " + format_record(r, width=width) for r in trace.records])


def format_state(state: PromptState, *, width: int = 100) -> str:
    """Every param with its kind, trainable flag and (shortened) text."""
    lines = []
    for name, p in state.params:
        flag = "" if p.trainable else " (frozen)"
        lines.append(f"{name} [{p.kind}]{flag}: {_short(p.value, width)}")
    for group, members in state.groups:
        lines.append(f"{group} = group({', '.join(members)})")
    return "\n".join(lines)


def format_changes(initial: PromptState, final: PromptState) -> str:
    """The params whose text differs between the two states, each with its whole final text (demos too).

    >>> from funcgrad.core.state import Param, apply_updates
    >>> s = PromptState.of(a=Param("Answer."), b=Param("Be brief."))
    >>> print(format_changes(s, apply_updates(s, {"a": "Count first.\\nThen answer."})))
    a:
      Count first.
      Then answer.
    >>> format_changes(s, s)
    'no prompt changed'
    """
    changed = [name for name in final.names if name not in initial or initial[name].value != final[name].value]
    if not changed:
        return "no prompt changed"
    blocks = []
    for name in changed:
        text = final[name].value
        body = "\n".join("  " + line if line else "" for line in text.splitlines()) if text else "  (empty)"
        blocks.append(f"{escape_line(name)}:\n{body}")
    return "\n".join(blocks)
