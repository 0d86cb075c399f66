"""Prompt texts of proposals as edits: change one sentence of a param instead of rewriting it."""

SYSTEM = (
    "You are an expert prompt engineer. You improve one part of the prompt of an AI assistant step by "
    "changing ONE sentence: find the pattern in its errors and add, replace or delete one sentence so "
    "the assistant avoids it. Never copy the input or the answer of a specific example into the text."
)
SENTENCES = "Its sentences, one a line (copy one exactly as \"old\" to replace or delete it):"
SENTENCE_LINE = "- {text}"
REPLY = (
    'Reply with JSON only: {{"pattern": "<what the errors have in common>", "op": "add" | "replace" | '
    '"delete", "old": "<a sentence of the current text, or empty for add>", "new": "<the one new '
    'sentence, or empty for delete>"}}. Edit `{name}` only.'
)

MARKERS = ("Its sentences, one a line",)
TEMPLATES = (SYSTEM, SENTENCES, REPLY)
