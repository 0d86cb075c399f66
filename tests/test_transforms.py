"""Every graph transformation keeps its invariant."""

import attrs
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from funcgrad import (
    Param,
    PromptState,
    StateError,
    TraceError,
    add_peer,
    add_skip,
    ancestors,
    check_trace,
    control_cone,
    control_reads,
    freeze_params,
    prune,
    readers,
    rename_param,
    split_param,
    subgraph,
    unfreeze_params,
)
from funcgrad.core.state import PARAM_KINDS
from funcgrad.testing import names, prompt_states, texts, traces

FAST = settings(max_examples=60, deadline=None)


@st.composite
def states_and_traces(draw):
    state = draw(prompt_states(min_size=1, max_size=4, with_groups=True))
    trace = draw(traces(param_names=state.names))
    return state, trace


def _every_rendering(state):
    return {n: state.render([n]) for n in list(state.names) + [g for g, _ in state.groups]}


@FAST
@given(prompt_states(min_size=1, with_groups=True), st.data())
def test_split_param_keeps_rendering_of_every_group_and_param(state, data):
    name = data.draw(st.sampled_from(state.names), label="name")
    texts_ = data.draw(st.lists(texts(max_size=8), min_size=2, max_size=3), label="pieces")
    kinds = data.draw(st.lists(st.sampled_from(PARAM_KINDS), min_size=len(texts_), max_size=len(texts_)))
    state = PromptState(
        tuple((n, attrs.evolve(p, value="\n\n".join(texts_)) if n == name else p) for n, p in state.params), state.groups
    )
    before = _every_rendering(state)
    try:
        new = split_param(state, name, list(zip(kinds, texts_)))
    except StateError as exc:  # legal reasons: a peer name is already taken, or a piece is empty
        assert "already" in str(exc) or "same name" in str(exc) or ("is empty" in str(exc) and "" in texts_)
        return
    after = _every_rendering(new)
    assert {k: after[k] for k in before} == before
    peers = new.resolve(name)
    assert [new[p].value for p in peers] == texts_
    assert [new[p].kind for p in peers] == kinds
    assert all(new[p].trainable == state[name].trainable and new[p].role == state[name].role for p in peers)
    assert name not in new.names
    assert set(new.names) == (set(state.names) - {name}) | set(peers)


def test_split_param_rejects_pieces_that_change_the_text():
    state = PromptState.of(sys=Param("a\n\nb"))
    with pytest.raises(StateError, match="'sys'.*must equal its current text"):
        split_param(state, "sys", [("instruction", "a"), ("format", "c")])
    with pytest.raises(StateError, match="piece kind 'poem'"):
        split_param(state, "sys", [("instruction", "a"), ("poem", "b")])
    with pytest.raises(StateError, match="at least two pieces"):
        split_param(state, "sys", [("instruction", "a\n\nb")])


@FAST
@given(prompt_states(min_size=1, with_groups=True), st.data())
def test_freeze_and_unfreeze_change_only_flags(state, data):
    targets = data.draw(st.lists(st.sampled_from(list(state.names) + [g for g, _ in state.groups]), max_size=3))
    leaves = {leaf for t in targets for leaf in state.resolve(t)}
    for op, flag in ((freeze_params, False), (unfreeze_params, True)):
        new = op(state, targets)
        assert new.names == state.names and new.groups == state.groups
        for n in state.names:
            assert attrs.evolve(new[n], trainable=True) == attrs.evolve(state[n], trainable=True)
            assert new[n].trainable == (flag if n in leaves else state[n].trainable)


@FAST
@given(states_and_traces(), st.data())
def test_rename_param_keeps_state_and_trace_consistent(st_tr, data):
    state, trace = st_tr
    old = data.draw(st.sampled_from(state.names), label="old")
    new_name = data.draw(names(), label="new")
    taken = set(state.names) | {g for g, _ in state.groups}
    if new_name in taken:
        with pytest.raises(StateError, match=repr(new_name)):
            rename_param(state, trace, old, new_name)
        return
    assume(not any(new_name in r.params for r in trace.records))
    s2, t2 = rename_param(state, trace, old, new_name)
    check_trace(t2)
    assert [r.id for r in readers(t2, new_name)] == [r.id for r in readers(trace, old)]
    assert readers(t2, old) == ()
    assert s2[new_name] == state[old]
    assert old not in s2
    assert s2.names == tuple(new_name if n == old else n for n in state.names)
    # Every group and every node's rendered text is unchanged.
    for g, members in state.groups:
        assert s2.render([g]) == state.render([g])
    for r1, r2 in zip(trace.records, t2.records):
        assert s2.render(r2.params) == state.render(r1.params)
        assert attrs.evolve(r2, params=()) == attrs.evolve(r1, params=())


@FAST
@given(traces(), st.data())
def test_add_skip_passes_check_trace_and_is_idempotent(trace, data):
    node = data.draw(st.sampled_from(trace.nodes))
    t2 = add_skip(trace, node)
    assert check_trace(t2) is t2
    assert node in t2.skips and t2.records == trace.records
    assert add_skip(t2, node) == t2
    with pytest.raises(TraceError, match="'not-a-node'"):
        add_skip(trace, "not-a-node")


@FAST
@given(traces(with_loss=True))
def test_prune_keeps_exactly_the_ancestors_of_the_loss_and_the_control_cone(trace):
    pruned = prune(trace)
    assert check_trace(pruned) is pruned
    loss = trace.loss.id
    reads = set(trace.control).union(*(ancestors(trace, c) for c in trace.control))
    assert {r.id for r in pruned.records} == {loss, *ancestors(trace, loss)} | reads == set(control_cone(trace))
    assert pruned.records[-1].id == loss
    assert all(attrs.evolve(r, control=()) == attrs.evolve(trace[r.id], control=()) for r in pruned.records)
    assert pruned.control == trace.control
    assert prune(pruned) == pruned


@FAST
@given(traces(with_loss=False))
def test_prune_without_loss_keeps_the_ancestors_of_the_output(trace):
    if trace.output is None:
        with pytest.raises(TraceError, match="neither a loss record nor an output"):
            prune(trace)
        return
    pruned = prune(trace)
    check_trace(pruned)
    reads = set(trace.control).union(*(ancestors(trace, c) for c in trace.control))
    assert {r.id for r in pruned.records} == {trace.output, *ancestors(trace, trace.output)} | reads


@FAST
@given(traces(), st.data())
def test_subgraph_is_closed_under_both_kinds_of_edge_and_valid(trace, data):
    ids = data.draw(st.lists(st.sampled_from([r.id for r in trace.records]), max_size=3), label="ids")
    sub = subgraph(trace, ids)
    assert check_trace(sub) is sub
    kept = {r.id for r in sub.records}
    assert set(ids) <= kept
    for r in sub.records:
        assert set(ancestors(trace, r.id)) <= kept
        # Only control moves (from dropped records to the next kept one): each kept record keeps its reads.
        assert attrs.evolve(r, control=()) == attrs.evolve(trace[r.id], control=())
        assert control_reads(sub, r.id) == control_reads(trace, r.id)
    # Nothing beyond the requested ids, the reads made before the last of them, and their ancestors.
    roots = set(ids) | (set(control_reads(trace, max(ids))) if ids else set())
    assert kept == roots.union(*(ancestors(trace, i) for i in roots))
    assert sub.control == tuple(c for c in trace.control if c in kept)
    assert [r.id for r in sub.records] == [r.id for r in trace.records if r.id in kept]
    assert set(sub.skips) <= set(sub.nodes)
    assert sub.output == (trace.output if trace.output in kept else None)


@FAST
@given(states_and_traces())
def test_transformations_leave_their_arguments_unchanged(st_tr):
    state, trace = st_tr
    before_state, before_trace = state, trace
    s_copy, t_copy = PromptState(state.params, state.groups), attrs.evolve(trace)
    freeze_params(state, state.names)
    rename_param(state, trace, state.names[0], "zz_new") if "zz_new" not in dict(state.groups) else None
    if trace.loss is not None or trace.output is not None:
        prune(trace)
    add_skip(trace, trace.nodes[0])
    assert state == s_copy and trace == t_copy
    assert state is before_state and trace is before_trace


@FAST
@given(prompt_states(min_size=1, with_groups=True), names(), st.data())
def test_an_empty_peer_keeps_every_rendering_and_a_filled_one_shows_in_its_group(state, name, data):
    assume(state.groups and name not in state and name not in dict(state.groups))
    group = data.draw(st.sampled_from([g for g, _ in state.groups]), label="group")
    before = _every_rendering(state)
    empty = add_peer(state, group, name, Param("", kind="demos"))
    assert {k: v for k, v in _every_rendering(empty).items() if k in before} == before
    assert empty.resolve(group)[-1] == name and state.resolve(group) == empty.resolve(group)[:-1]
    filled = add_peer(state, group, name, Param("Example: x -> y", kind="demos"))
    assert filled.render([group]).endswith("Example: x -> y")
    with pytest.raises(StateError, match="already exists"):
        add_peer(empty, group, name, Param(""))


def test_add_peer_names_an_unknown_group():
    with pytest.raises(StateError, match="'nope' is not a group of this state; its groups are: sys"):
        add_peer(PromptState(params={"i": Param("x")}, groups={"sys": ("i",)}), "nope", "d", Param(""))
