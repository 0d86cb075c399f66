"""Object counting with a demos peer: the built-in task, its ``count`` node also reading ``count_demos``.

The demos param starts empty (the node's prompt is then the built-in one plus a
blank line), so :func:`funcgrad.strategies.bootstrap_demos` has a param to fill.
Used by examples/compare_demos.toml (``name = "counting_demos:object_counting_demos"``).

>>> task = object_counting_demos(n_train=2, n_val=1, n_test=1)
>>> task.state.resolve("count_system"), task.state["count_demos"].kind
(('count_instruction', 'count_format', 'count_demos'), 'demos')
"""

import attrs

from funcgrad import Param, PromptState
from funcgrad.tasks import object_counting


def object_counting_demos(**kwargs):
    """``object_counting(**kwargs)`` with an empty, trainable ``count_demos`` peer after the format rule."""
    task = object_counting(**kwargs)
    demos = Param("", role="worked examples shown to the 'count' node: inputs and correct replies", kind="demos")
    state = PromptState(params=task.state.params + (("count_demos", demos),),
                        groups={"count_system": ("count_instruction", "count_format", "count_demos")})
    return attrs.evolve(task, state=state)
