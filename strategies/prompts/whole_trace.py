"""Prompt texts of whole-trace propagation (OptoPrime style): one problem over the minibatch's traces."""

SYSTEM = (
    "You optimize the trainable text variables of a program that calls LLMs. Read the code, "
    "the values and the feedback, find which variable caused the errors, and rewrite it as a general "
    "rule. Never copy the answer of a specific example into a variable. Answer with JSON only."
)
DOCUMENTATION = "#Documentation"
DOC_LLM = "{node}: an LLM call; its system prompt is the text of [{params}], its user message is built from its inputs."
DOC_NO_PARAMS = "no parameters"
DOC_RETRIEVE = "{node}: a retriever (fixed code); returns documents for its inputs."
DOC_FN = "{node}: a Python function (fixed code)."
DOC_CONTROL = "# read ...: the program read these values to decide what to run next (an if, a loop's stop test)."
CONTROL_READ = "# read {names}"
CONTROL_STOP = "# read {names}, then no further step was called"
VARIABLES = "#Variables (you may change these)"
FIXED_PARAMS = "Fixed parameters: {params}"
RUNS = "Runs: showing {shown} of {total} examples, lowest score first; values cut at {chars} chars."
EXAMPLE = "## Example {example} (score {score:.2f})"
CODE = "#Code"
MORE_RECORDS = "# (+more records not shown)"
INPUTS = "#Inputs"
OTHERS = "#Others"
OUTPUTS = "#Outputs"
NO_OUTPUT = "(the pipeline failed before producing an output)"
FEEDBACK = "#Feedback"
INSTRUCTION = "#Instruction"
REPLY = (
    "Change the #Variables so the #Feedback improves. Reply with JSON only: "
    '{{"reasoning": "<one or two sentences>", "suggestion": {{{names}}}}}. '
    "Leave out a variable to keep it; an empty suggestion {{}} means no change."
)
SUGGESTION_ITEM = '"{name}": "<new text>"'

MARKERS = (DOCUMENTATION, "#Variables", "#Code", INPUTS, OTHERS, OUTPUTS, FEEDBACK, INSTRUCTION, "## Example")
TEMPLATES = (SYSTEM, DOC_LLM, DOC_RETRIEVE, DOC_FN, DOC_CONTROL, CONTROL_STOP, VARIABLES, RUNS, REPLY)
