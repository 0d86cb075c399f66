"""A 2-hop retrieval pipeline on the scripted engine: query generator called twice, retriever, answer."""

import re

import funcgrad
from funcgrad import LLM, Example, Param, PromptState, check_trace, format_trace, prune, retriever, run, run_example
from funcgrad.engines.scripted import ScriptedEngine

DOCS = {
    "who directed Alien": "Alien was directed by Ridley Scott.",
    "where was Ridley Scott born": "Ridley Scott was born in South Shields.",
}

query = LLM("query", system=("query_sys",), user="Question: {question}\nKnown so far: {notes}")
answer = LLM("answer", system=("answer_sys",), user="Question: {question}\nEvidence:\n{hop1}\n{hop2}")


@retriever("search")
def search(q):
    return tuple(text for key, text in DOCS.items() if key in q) or ("no match",)


def two_hop(prompts, x):
    q1 = query(prompts, question=x, notes="(nothing yet)")
    hop1 = search(q1)
    q2 = query(prompts, question=x, notes=hop1)
    hop2 = search(q2)
    return answer(prompts, question=x, hop1=hop1, hop2=hop2)


STATE = PromptState.of(
    query_sys=Param("Write one search query for the missing fact.", role="query generator"),
    answer_sys=Param("Answer with a place name only.", role="answer node"),
)


def respond(request):
    user = request.messages[-1].content
    system = request.messages[0].content
    if system.startswith("Write one search query"):
        return "where was Ridley Scott born" if "Ridley Scott" in user else "who directed Alien"
    return "South Shields" if "South Shields" in user else "unknown"


def test_two_hop_trace_shows_both_time_stamped_query_calls_in_order():
    engine = ScriptedEngine(respond)
    y, trace = run(two_hop, STATE, "Where was the director of Alien born?", engine=engine, example_id="alien")
    assert y == "South Shields"
    check_trace(trace)
    assert [(r.node, r.call_index) for r in trace.records] == [
        ("x", 0), ("query", 0), ("search", 0), ("query", 1), ("search", 1), ("answer", 0),
    ]
    text = format_trace(trace)
    lines = text.splitlines()
    assert lines[0] == "trace alien: 6 records, output %5"
    q0 = next(i for i, line in enumerate(lines) if "llm query#0(" in line)
    q1 = next(i for i, line in enumerate(lines) if "llm query#1(" in line)
    assert q0 < q1
    assert re.search(r"%1 = llm query#0\(question=%0, notes='\(nothing yet\)'\) reads \[query_sys\].*-> 'who directed Alien'", lines[2])
    assert re.search(r"%3 = llm query#1\(question=%0, notes=%2\) reads \[query_sys\].*-> 'where was Ridley Scott born'", lines[4])
    assert "%2 = retrieve search#0(q=%1)" in lines[3] and "%4 = retrieve search#1(q=%3)" in lines[5]
    assert "%5 = llm answer#0(question=%0, hop1=%2, hop2=%4) reads [answer_sys]" in lines[6] and "-> 'South Shields'" in lines[6]
    assert engine.calls() == 3
    assert funcgrad.readers(trace, "query_sys") == (trace[1], trace[3])


def test_two_hop_scored_and_pruned():
    result = run_example(two_hop, STATE, Example("alien", "Where was the director of Alien born?", "South Shields"),
                         engine=ScriptedEngine(respond), loss=funcgrad.exact_match)
    assert result.loss.score == 1.0
    # Every record feeds the answer, so pruning to the loss keeps them all.
    assert [r.id for r in prune(result.trace).records] == [0, 1, 2, 3, 4, 5, 6]
    assert result.trace.records[-1].inputs == (5,)
    assert funcgrad.loads(funcgrad.dumps(result)) == result
