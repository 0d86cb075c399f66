"""The prompting-pattern library is task-agnostic: no built-in task's vocabulary appears in it."""

import re

import pytest

from funcgrad.strategies.prompts.patterns import PATTERNS, TIPS
from funcgrad.tasks import TASKS

# English function words and the words of any reply-shape rule: a task's questions use them too,
# but they carry no task knowledge. Everything else a task's examples say is its vocabulary.
GENERIC = frozenset({"about", "answer", "does", "each", "every", "first", "form", "from", "have", "input", "last",
                     "line", "many", "only", "part", "question", "step", "that", "then", "there", "they", "this",
                     "through", "what", "when", "where", "which", "while", "will", "with", "write", "your"})


def _words(text) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", str(text).lower()) if len(w) >= 4}


def _vocabulary(name: str) -> set[str]:
    task = TASKS[name](seed=0, n_train=40, n_val=5, n_test=5)
    words = set()
    for ex in task.train + task.val + task.test:
        words |= _words(ex.x) | _words(ex.target)
    return words - GENERIC


@pytest.mark.parametrize("name", sorted(TASKS))
def test_no_pattern_or_tip_uses_a_task_word(name):
    vocabulary = _vocabulary(name)
    assert len(vocabulary) > 10  # the check has something to find
    for key, text in {**PATTERNS, **TIPS}.items():
        assert not _words(text) & vocabulary, f"{key!r} uses {name}'s words {sorted(_words(text) & vocabulary)}"


def test_the_vocabulary_check_catches_a_task_word():
    assert _words("Count the fruits, then write 'Answer: <n>'.") & _vocabulary("object_counting") == {"fruits"}


def test_every_reasoning_pattern_ends_with_an_answer_line_the_parsers_read():
    assert all("'Answer: <answer>'" in text for key, text in PATTERNS.items() if key != "direct")
