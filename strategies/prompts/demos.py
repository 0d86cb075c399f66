"""The text a demos param takes when :func:`funcgrad.strategies.bootstrap_demos` fills it.

These reach the *task* model (they are the value of a ``demos``-kind param), not the
optimizer, so they are not a meta-prompt family and are not tag-leak phrases.
"""

HEADER = "Worked examples (an input, then a correct reply):"
DEMO = "Input:\n{input}\nReply:\n{output}"
SEPARATOR = "\n\n"

# Rationalization (STaR): added to the demos param of a node that failed an example,
# for one more run of that example. The demo kept from such a run is the node's
# input (its user message, which never holds this hint) and its reply.
HINT = (
    "A note for this one input: your earlier reply was judged as follows: {feedback}\n"
    "Reply again, reaching the correct result by your own working. Do not mention this note."
)
# A reply that still speaks of the note is not kept as a demo.
HINT_ECHOES = ("this note", "the note", "hint", "judged")
