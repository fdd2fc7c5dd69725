"""The identifiable_node service (not yet built: see the issues)."""
