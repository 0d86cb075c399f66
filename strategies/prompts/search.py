"""The one request :func:`funcgrad.strategies.search` makes of the optimizer model: an instruction candidate.

Each request carries one tip from :data:`funcgrad.strategies.prompts.patterns.TIPS`
(drawn with a seeded stream), so the candidates differ in kind; the reply is a JSON
object ``{"instruction": ...}`` (schema-constrained where the engine supports it).
"""

SYSTEM = (
    "You write the instruction for one step of a language-model pipeline. "
    "You reply with one JSON object and nothing else."
)
BODY = (
    "What the step is for: {role}\n\n"
    "Its current instruction:\n{current}\n\n"
    "Inputs the step received, each with a reply that was judged correct:\n{demos}\n\n"
    "{tip}"
    "Write one new instruction for this step: a few plain sentences telling the model how to handle any input "
    "of this kind. Do not answer the inputs above and do not quote them. "
    'Reply as {{"instruction": "..."}}.'
)
DEMO = "Input: {input}\nCorrect reply: {output}"
NO_DEMOS = "(no reply was judged correct yet)"
TIP = "{tip}\n"
