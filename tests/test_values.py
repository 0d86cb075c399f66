"""FrozenDict is a read-only Mapping equal to the dict it froze; freeze/thaw invert each other."""

import collections.abc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funcgrad.core.values import FrozenDict, freeze, thaw
from funcgrad.testing import json_values

plain_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=4), plain_json, max_size=4))
def test_a_frozen_dict_is_a_mapping_equal_to_the_dict_it_froze(d):
    f = freeze(d)
    assert isinstance(f, FrozenDict) and isinstance(f, collections.abc.Mapping) and not isinstance(f, dict)
    assert f == d and d == f and not (f != d)
    assert list(f) == list(d) and len(f) == len(d) and dict(f.items()).keys() == d.keys()
    assert all(f.get(k) == freeze(v) for k, v in d.items()) and f.get("\0missing") is None
    assert thaw(f) == d and type(thaw(f)) is dict
    assert hash(f) == hash(freeze(d))


@settings(max_examples=100, deadline=None)
@given(json_values())
def test_freeze_is_idempotent_and_thaw_inverts_it(value):
    assert freeze(value) == value and freeze(thaw(value)) == value


def test_a_frozen_dict_cannot_be_changed():
    f = FrozenDict({"a": 1})
    with pytest.raises(TypeError):
        f["a"] = 2
    with pytest.raises(AttributeError, match="immutable"):
        f.x = 1
    assert not hasattr(f, "update") and not hasattr(f, "pop")
    assert f != {"a": 2} and f != {"a": 1, "b": 2} and f != ["a"]
