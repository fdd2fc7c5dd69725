"""`python -m anonymised_node`: the service entry point (a shell until its issue is done)."""

import sys

print("anonymised_node: not built yet", file=sys.stderr)
sys.exit(1)
