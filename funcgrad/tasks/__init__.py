"""Built-in tasks (generated offline, seeded)."""
