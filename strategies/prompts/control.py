"""Prompt texts of control credit: the feedback a record gets for what its value decided.

When the pipeline reads a record's value to decide what to run next (a loop's stop test,
an early exit: ``Trace.control``), backprop (``control_credit=True``) sends that record a
factual account of what followed the decision and how the run ended; it reads as one
feedback item among the data feedback, in the record's critic call.
"""

CONTROL_FEEDBACK = "(control) The pipeline read this answer to decide what to run next. {parts}"
STOPPED = "The run stopped right after this decision: no further step was called."
FOLLOWED = "After this decision {n} more model call(s) ran: {calls}."
NO_MODEL_AFTER = "No model call ran after this decision: only {calls} finished the run."
MORE_CALLS = " (+{n} more)"
OUTPUT_SAME = "The final output did not change after it: {value}."
OUTPUT_CHANGED = "The final output changed after it, from {before} to {after}."
OUTPUT_NEW = "The final output {value} was produced after it."
END = "The run ended with score {score:.2f}: {loss}"

MARKERS = ()
TEMPLATES = (CONTROL_FEEDBACK, STOPPED, FOLLOWED, NO_MODEL_AFTER, OUTPUT_SAME, OUTPUT_CHANGED, OUTPUT_NEW, END)
