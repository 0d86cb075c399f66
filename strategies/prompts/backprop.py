"""Prompt texts of per-node textual backpropagation: the critic (backward) and the optimizer."""

FIXED = "no noticeable error"
FIXED_GRADIENT = "score {score:.2f}: " + FIXED

# ---- backward (critic) call: system message, then the evidence, then the params and reply format
CRITIC_SYSTEM = (
    "You are a critic of one step of an LLM pipeline. Compare the step's answer with what was expected, "
    "find the concrete mistake, and say what the step's prompt should tell the model so it avoids this "
    "kind of mistake. No generic advice. At most {words} words per field. Reply with JSON only."
)
CALLS_HEADER = "The step `{node}` was called {n} times in this run, in this order; you judge call #{index}:"
CALL_LINE = "  #{index}: input {given} -> answer {answer}{mark}"
THIS_CALL = "  <- this call"
MORE_CALLS = "  (+{n} later calls not shown)"
CALL_INPUT = "Call #{index} received this input:"
ONE_CALL_INPUT = "The step `{node}` (one call in this run) received this input:"
ANSWERED = "It answered:"
EXPECTED_SCORED = "The expected final answer of the pipeline is {target}; this run scored {score:.2f}."
SCORED = "This run scored {score:.2f}."
FEEDBACK_HEADER = "Feedback on this answer, in call order:"
MORE_FEEDBACK = "(+{n} more not shown)"
PARAMS_HEADER = "The step's prompt is made of these parameters:"
PARAM_LINE = "- {name} ({kind}, {flag}): {value}"
TO_IMPROVE, FIXED_PARAM = "to be improved", "fixed"
SKIP_FEEDBACK = "(skip connection from the loss) {text}"
UPSTREAM_FEEDBACK = "(from `{node}` call #{index}) {text}"
ENTRY_WHAT = "one entry per parameter to be improved, with a general rule that text should add"
ENTRY_INPUTS = ', and one entry "{key}" saying what was wrong with the step\'s inputs'
CRITIC_REPLY = (
    "Reply with JSON with these fields:\n"
    '"mistake": what the answer got wrong compared with the expected answer, i.e. the error to prevent;\n'
    '"feedback": a list with {what}: [{example}]'
)
MISTAKE_FIX = "Mistake: {mistake} Fix: {fix}"

# ---- optimizer call: one per trainable param
OPTIMIZER_SYSTEM = (
    "You are an expert prompt engineer. You improve one part of the prompt of an AI assistant step so it "
    "makes fewer mistakes: find the pattern in its errors and write a general rule that prevents it. Never "
    "copy the input or the answer of a specific example into the text. "
    "Write the new text between {open} and {close}."
)
TARGET_LINE = "The step {nodes} of a pipeline reads the prompt part `{name}` ({kind})."
ROLE_LINE = "What it is for: {role}"
CURRENT_HEADER = "Its current text:"
PEERS_HEADER = "The step also reads (not changed now):"
PEER_LINE = "- {name}: {value}"
EVIDENCE_HEADER = "Evidence, lowest score first ({shown} of {total} examples; texts cut at {chars} chars):"
EXAMPLE_LINE = "{n}. Example {example} (score {score:.2f})"
INPUT_LINE = "   Input{stamp}: {text}"
ANSWER_LINE = "   Answer{stamp}: {text}"
CRITIQUE_LINE = "   Critique{stamp}: {text}"
EXPECTED_LINE = "   Expected final answer: {text}"
STAMP = " (call #{index})"
RULES = (
    "Rules for the new text: at most {max_chars} characters; complete text the assistant reads, "
    "not a critique and not advice about the prompt; general, with no example's input or answer."
)
OPTIMIZER_REPLY = (
    'First write one line starting with "Pattern:" naming what the errors have in common. Then write the '
    "complete new text of `{name}` between {open} and {close}."
)

MARKERS = ("Pattern:", "Expected final answer", "to be improved", "Evidence, lowest score first",
           "Rules for the new text", "The step also reads", "Its current text", "What it is for:")
TEMPLATES = (CRITIC_SYSTEM, CALLS_HEADER, CALL_INPUT, ONE_CALL_INPUT, EXPECTED_SCORED, FEEDBACK_HEADER, PARAMS_HEADER,
             ENTRY_WHAT, CRITIC_REPLY, OPTIMIZER_SYSTEM, TARGET_LINE, PEERS_HEADER, EVIDENCE_HEADER, RULES,
             OPTIMIZER_REPLY, SKIP_FEEDBACK)
