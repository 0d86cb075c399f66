"""The text a demos param takes when :func:`funcgrad.strategies.bootstrap_demos` fills it.

These reach the *task* model (they are the value of a ``demos``-kind param), not the
optimizer, so they are not a meta-prompt family and are not tag-leak phrases.
"""

HEADER = "Worked examples (an input, then a correct reply):"
DEMO = "Input:\n{input}\nReply:\n{output}"
SEPARATOR = "\n\n"
