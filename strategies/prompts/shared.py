"""Prompt texts every built-in strategy shares: fences, history, rejected proposals, cut markers."""

VALUE_TAG = "NEW_VALUE"
CURRENT_TAG = "CURRENT_VALUE"

HISTORY_HEADER = "Best past values (validation score):"
HISTORY_HEADER_OF = "Best past values of {param} (validation score):"
HISTORY_LINE = "- (val {score}) {value}"
REJECTED_HEADER = "Failed proposals this step (write something different):"
REJECTED_HEADER_OF = "Failed proposals this step for {param} (write something different):"
REJECTED_LINE = "- {value}  -> {why}"
SINCE_IMPROVEMENT = "Steps since last improvement: {n}"
BOLDER = " (make a bolder change)"
CLIP_MARKER = "…[+{n} chars cut]"
EVIDENCE_CUT = "(+{n} more examples not shown: the prompt is capped at {cap} chars)"
BLOCK_CUT = "…[evidence cut at the prompt cap]"

# Literal markers of our prompts (tags and headers) that must never appear in a proposed value.
MARKERS = (f"<{VALUE_TAG}>", f"</{VALUE_TAG}>", f"<{CURRENT_TAG}>", f"</{CURRENT_TAG}>", VALUE_TAG, CURRENT_TAG,
           "chars cut]", "evidence cut at", "Failed proposals", "Best past values", "Steps since last improvement")
TEMPLATES = (HISTORY_HEADER, HISTORY_HEADER_OF, REJECTED_HEADER, REJECTED_HEADER_OF, SINCE_IMPROVEMENT, EVIDENCE_CUT)
