"""funcgrad: auto-differentiate LLM pipelines with text."""
