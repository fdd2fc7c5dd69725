"""`python -m identifiable_node`: the service entry point (a shell until its issue is done)."""

import sys

print("identifiable_node: not built yet", file=sys.stderr)
sys.exit(1)
