"""Trial protocols: the schema, loading with clear errors, and what they select."""
