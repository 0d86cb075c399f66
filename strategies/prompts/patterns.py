"""Task-agnostic prompting patterns: reply shapes a search tries as a node's format.

They reach the *task* model as the value of a ``format``-kind param, so they are
written for any question: they name no task, no domain and no label
(tests/test_patterns.py checks that no built-in task's vocabulary appears here).
The keys are the names reports and step traces use.
"""

PATTERNS = {
    "direct": "Reply with the final answer only.",
    "step_by_step": (
        "Work through the question step by step, one brief line per step. "
        "Then write a last line of the form 'Answer: <answer>'."
    ),
    "list_first": (
        "First list, one per line, each part of the input that the question asks about, and leave out every part "
        "it does not ask about. Then write a last line of the form 'Answer: <answer>'."
    ),
}

# One of these (or none) is added to each request for an instruction candidate, so
# the candidates differ in kind, not only in wording (sampled with a seeded stream).
TIPS = {
    "none": "",
    "creative": "Do not be afraid to be creative when you write the instruction.",
    "simple": "Keep the instruction brief and plain.",
    "description": "Make the instruction describe the task precisely.",
    "high_stakes": "The instruction is for a task where every mistake is costly.",
    "persona": "Start the instruction by giving the model a role suited to the task.",
}
