"""An LLM-as-judge loss: a model scores an output against a rubric and the target.

A :class:`Judge` is a value. It builds one :class:`~funcgrad.core.calls.Request` from
``(output, example)`` (:meth:`Judge.request`) and reads the reply into a
:class:`~funcgrad.core.run.Loss` (:meth:`Judge.read`): the score on the judge's scale,
normalised to [0, 1], and the judge's critique as the feedback. It never calls a
model itself: :func:`funcgrad.core.run.run_example` performs its call through the
engine it was given (so the call is cached, metered under the role ``judge`` and
replayable like every other) and records it in the loss record. A reply that cannot
be read raises :class:`JudgeError`, and the example is recorded as failed, never
scored 0.

>>> from funcgrad.core.run import Example
>>> judge = Judge("Full marks only if the answer equals the reference.", scale=(1, 5))
>>> judge.read('{"critique": "matches the reference", "score": 5}', Example("e", "2+2?", 4))
Loss(score=1.0, feedback='judge score 5/5: matches the reference')
>>> judge.request("5", Example("e", "2+2?", 4)).role
'judge'
"""

from __future__ import annotations

import re
from typing import Any

import attrs
import orjson

from funcgrad.core.calls import Request
from funcgrad.core.errors import ConfigError, EngineError
from funcgrad.core.nodes import as_text
from funcgrad.core.run import Example, Loss

SYSTEM = (
    "You grade an answer to a question against a reference answer. The reference answer is correct.\n"
    "Rubric: {rubric}\n"
    "Give a score from {low} (worst) to {high} (best).\n"
    'Reply with JSON only: {{"answer_says": "<the final answer the graded answer gives, copied>", '
    '"reference_says": "<the reference answer, copied>", '
    '"critique": "<one short sentence saying what is right or wrong>", "score": <integer>}}'
)
USER = "Question:\n{question}\n\nReference answer:\n{target}\n\nAnswer to grade:\n{output}"
FEEDBACK = "judge score {score}/{high}: {critique}"
# The two copied fields come first: a small judge that has written down what the answer
# and the reference say compares them; asked for a critique at once, the 1.5B model
# passed wrong answers and failed right ones (docs/results.md, section 7).
QUOTE_CHARS = 40
MIN_TOKENS = 64


class JudgeError(EngineError):
    """A judge's reply could not be read as a score on its scale; the example is a failure, not a 0."""


def _scale(instance, attribute, value):
    if value is None:
        raise ConfigError("Judge.scale is missing: a rubric needs a score scale, e.g. scale=(1, 5)")
    ok = (
        isinstance(value, tuple) and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value) and value[0] < value[1]
    )
    if not ok:
        raise ConfigError(f"Judge.scale = {value!r}: must be two whole numbers (lowest, highest) with lowest < highest, e.g. (1, 5)")


def _rubric(instance, attribute, value):
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"Judge.rubric = {value!r}: must be a non-empty text saying what a good answer is")


def _enough_tokens(instance, attribute, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < MIN_TOKENS:
        raise ConfigError(f"Judge.{attribute.name} = {value!r}: must be a whole number >= {MIN_TOKENS} (room for a critique and a score)")


def _tuple_or_none(value):
    return tuple(value) if isinstance(value, list) else value


@attrs.frozen
class Judge:
    """A loss computed by a model: ``rubric`` and ``scale`` (lowest, highest) say how to grade.

    ``model`` is the model the request names ("" = the engine's own model);
    ``output_key`` grades one field of a dict output (e.g. ``"raw"`` for the built-in
    parse nodes) instead of the whole value; ``json_schema`` asks the server for
    schema-constrained JSON; the schema caps the critique at :meth:`critique_chars` so the
    score still fits in ``max_tokens``. Bad values raise ConfigError at construction, before any call.
    """

    rubric: str = attrs.field(validator=_rubric)
    scale: tuple[int, int] = attrs.field(default=None, converter=_tuple_or_none, validator=_scale)
    model: str = attrs.field(default="", validator=attrs.validators.instance_of(str))
    max_tokens: int = attrs.field(default=96, validator=_enough_tokens)
    output_key: str = attrs.field(default="", validator=attrs.validators.instance_of(str))
    json_schema: bool = True

    def request(self, output: Any, example: Example) -> Request:
        """The judge's one request for ``output`` on ``example`` (greedy, role ``judge``)."""
        low, high = self.scale
        if self.output_key and hasattr(output, "get"):
            output = output.get(self.output_key, output)
        user = USER.format(question=as_text(example.x), target=as_text(example.target), output=as_text(output))
        return Request(
            messages=(("system", SYSTEM.format(rubric=self.rubric.strip(), low=low, high=high)), ("user", user)),
            model=self.model, temperature=0.0, max_tokens=self.max_tokens,
            json_schema=self.schema() if self.json_schema else None, role="judge",
        )

    def critique_chars(self) -> int:
        """The critique's length cap: about 3 characters per token left after the JSON keys, the two copied fields and the score.

        >>> Judge("r", scale=(1, 5), max_tokens=96).critique_chars()
        136
        """
        return 3 * (self.max_tokens - 24) - 2 * QUOTE_CHARS

    def schema(self) -> str:
        """The JSON Schema of a reply: what the answer and the reference say (copied, at most
        ``QUOTE_CHARS`` each), a critique (at most :meth:`critique_chars`), then an integer score on the scale."""
        low, high = self.scale
        quote = {"type": "string", "maxLength": QUOTE_CHARS}
        return orjson.dumps({
            "type": "object",
            "properties": {
                "answer_says": quote,
                "reference_says": quote,
                "critique": {"type": "string", "maxLength": self.critique_chars()},
                "score": {"type": "integer", "minimum": low, "maximum": high},
            },
            "required": ["answer_says", "reference_says", "critique", "score"],
        }).decode()

    def read(self, reply: str, example: Example) -> Loss:
        """The Loss of a judge ``reply``; JudgeError if it holds no score on the scale.

        >>> Judge("Exact answers only.", scale=(0, 10)).read('Score: 7. Close.', Example("e", "q", 1)).score
        0.7
        """
        score, critique = _score_and_critique(reply)
        low, high = self.scale
        if score is None:
            raise JudgeError(f"judge reply has no integer score: {_cut(reply)!r}")
        if not low <= score <= high:
            raise JudgeError(f"judge score {score} is outside the scale {low}..{high}: {_cut(reply)!r}")
        return Loss((score - low) / (high - low), FEEDBACK.format(score=score, high=high, critique=critique or "(no critique)"))


_SCORE = re.compile(r"\bscore\"?\s*[:=]\s*(-?\d+)\b", re.IGNORECASE)


def _score_and_critique(reply: str) -> tuple[int | None, str]:
    text = reply.strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    try:
        data = orjson.loads(fenced.group(1) if fenced else text)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        score = data.get("score")
        critique = data.get("critique")
        if isinstance(score, float) and score.is_integer():
            score = int(score)
        if isinstance(score, int) and not isinstance(score, bool):
            return score, " ".join(critique.split()) if isinstance(critique, str) else ""
        return None, ""
    found = _SCORE.findall(text)
    if found:
        return int(found[-1]), " ".join(_SCORE.sub("", text).split()).strip(" .,;")
    return None, ""


def _cut(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
