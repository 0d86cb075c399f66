"""Properties of Param / PromptState / apply_updates, and a stateful model check."""

import attrs
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from funcgrad import Param, PromptState, StateError, apply_updates, freeze_params, unfreeze_params
from funcgrad.testing import names, params, prompt_states, texts

FAST = settings(max_examples=80, deadline=None)


@FAST
@given(prompt_states(with_groups=True))
def test_apply_updates_with_no_updates_is_identity(state):
    assert apply_updates(state, {}) is state
    assert apply_updates(state, {}) == state


@FAST
@given(prompt_states(min_size=1, with_groups=True), st.data())
def test_frozen_params_never_change(state, data):
    frozen = data.draw(st.lists(st.sampled_from(state.names), min_size=1, unique=True), label="frozen")
    state = freeze_params(state, frozen)
    before = state.values()
    touched = data.draw(st.sampled_from(frozen), label="touched")
    others = data.draw(st.dictionaries(st.sampled_from(state.trainable_names or ("",)), texts(), max_size=2))
    others.pop("", None)
    updates = {**others, touched: data.draw(texts(), label="text")}
    with pytest.raises(StateError, match=f"{touched!r} is frozen"):
        apply_updates(state, updates)
    assert state.values() == before
    assert all(not state[n].trainable for n in frozen)


@FAST
@given(prompt_states(with_groups=True), names(), texts())
def test_unknown_names_raise_state_error_naming_the_param(state, name, text):
    assume(name not in state)
    with pytest.raises(StateError, match=f"unknown parameter {name!r}"):
        apply_updates(state, {name: text})
    with pytest.raises(StateError, match=repr(name)):
        state[name]
    if name not in dict(state.groups):
        with pytest.raises(StateError, match=repr(name)):
            state.resolve(name)
        with pytest.raises(StateError, match=repr(name)):
            freeze_params(state, [name])


@FAST
@given(prompt_states(min_size=1, with_groups=True), st.data())
def test_apply_updates_changes_exactly_the_updated_values(state, data):
    trainable = state.trainable_names
    assume(trainable)
    updates = data.draw(st.dictionaries(st.sampled_from(trainable), texts(), min_size=1))
    new = apply_updates(state, updates)
    assert new.names == state.names and new.groups == state.groups
    for n in state.names:
        want = updates.get(n, state[n].value)
        assert new[n].value == want
        assert attrs.evolve(new[n], value="") == attrs.evolve(state[n], value="")


@FAST
@given(prompt_states(min_size=1), st.data())
def test_non_str_update_is_rejected_naming_the_param(state, data):
    assume(state.trainable_names)
    name = data.draw(st.sampled_from(state.trainable_names))
    with pytest.raises(StateError, match=f"update for {name!r} must be str"):
        apply_updates(state, {name: 3})


def test_state_validation_errors_name_the_bad_field():
    with pytest.raises(StateError, match="kind 'poem'"):
        Param("x", kind="poem")
    with pytest.raises(StateError, match="value must be str"):
        Param(3)
    with pytest.raises(StateError, match="role must be str"):
        Param("x", role=None)
    with pytest.raises(StateError, match="'a' is defined twice"):
        PromptState([("a", Param("x")), ("a", Param("y"))])
    with pytest.raises(StateError, match="' a'"):
        PromptState([(" a", Param("x"))])
    with pytest.raises(StateError, match="group 'g' names unknown parameter 'zz'"):
        PromptState([("a", Param("x"))], [("g", ("zz",))])
    with pytest.raises(StateError, match="group 'a' has the same name"):
        PromptState([("a", Param("x"))], [("a", ("a",))])
    with pytest.raises(StateError, match="'b' must be a Param"):
        PromptState([("b", "text")])
    with pytest.raises(StateError, match="mapping"):
        apply_updates(PromptState.of(a=Param("x")), [("a", "y")])


@FAST
@given(prompt_states(with_groups=True))
def test_state_is_immutable(state):
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        state.params = ()
    copy = state.as_dict()
    copy.clear()
    assert len(state.as_dict()) == len(state)


class PromptStateMachine(RuleBasedStateMachine):
    """PromptState vs a plain dict name -> [value, trainable]."""

    def __init__(self):
        super().__init__()
        self.state = PromptState()
        self.model: dict[str, list] = {}

    @rule(name=names(), param=params())
    def add_param(self, name, param):
        if name in self.model:
            return
        self.state = PromptState(self.state.params + ((name, param),), self.state.groups)
        self.model[name] = [param.value, param.trainable]

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def update(self, data):
        chosen = data.draw(st.dictionaries(st.sampled_from(sorted(self.model)), texts(), max_size=3))
        before = self.state
        if any(not self.model[n][1] for n in chosen):
            with pytest.raises(StateError, match="frozen"):
                apply_updates(self.state, chosen)
            assert self.state is before
            return
        self.state = apply_updates(self.state, chosen)
        for n, text in chosen.items():
            self.model[n][0] = text

    @rule(name=names(), text=texts())
    def update_unknown(self, name, text):
        if name in self.model:
            return
        with pytest.raises(StateError, match=repr(name)):
            apply_updates(self.state, {name: text})

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def freeze(self, data):
        chosen = data.draw(st.lists(st.sampled_from(sorted(self.model)), max_size=3))
        self.state = freeze_params(self.state, chosen)
        for n in chosen:
            self.model[n][1] = False

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def unfreeze(self, data):
        chosen = data.draw(st.lists(st.sampled_from(sorted(self.model)), max_size=3))
        self.state = unfreeze_params(self.state, chosen)
        for n in chosen:
            self.model[n][1] = True

    @invariant()
    def matches_model(self):
        assert set(self.state.names) == set(self.model)
        assert self.state.values() == {n: v for n, (v, _) in self.model.items()}
        assert set(self.state.trainable_names) == {n for n, (_, t) in self.model.items() if t}


PromptStateMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=20, deadline=None)
TestPromptStateMachine = PromptStateMachine.TestCase
