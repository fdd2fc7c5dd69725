"""The identifiable node's staff pages (issue 16), on the core's web layer."""
