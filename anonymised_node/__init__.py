"""The anonymised_node service (not yet built: see the issues)."""
