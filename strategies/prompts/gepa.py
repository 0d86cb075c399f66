"""Prompt texts of the GEPA-style strategy: the reflection call that writes a child's component."""

SYSTEM = (
    "You improve one text parameter of an LLM program by reflecting on how it did. Read the inputs, "
    "the model's replies and the feedback, work out what the text must tell the model to get such "
    "inputs right, and rewrite the text as a general rule. Never copy the answer of a specific "
    "example into the text."
)
TARGET = "The text `{name}` ({kind}) is part of the prompt of {nodes}."
ROLE = "What the text is for: {role}"
CURRENT = "Its current text:"
RUNS = "How the program did with it on {shown} training examples (lowest score first):"
EXAMPLE = "## Reflection example {n} (score {score:.2f})"
INPUT = "Input to {node}: {text}"
REPLY = "Reply of {node}: {text}"
FEEDBACK = "Feedback: {text}"
ASK = (
    "First say in one sentence what the replies got wrong, then write the whole improved text of "
    "`{name}` (at most {max_chars} characters) between {open} and {close}."
)

ASK_JSON = (
    "Reply with JSON only: {{\"diagnosis\": \"<one sentence: what the replies got wrong>\", "
    "\"text\": \"<the whole improved text of `{name}`, at most {max_chars} characters>\"}}."
)

MARKERS = ("## Reflection example",)
TEMPLATES = (SYSTEM, TARGET, ROLE, RUNS, ASK, ASK_JSON)
