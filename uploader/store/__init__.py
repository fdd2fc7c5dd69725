"""The node's durable state: a SQLite index of studies and instances, their states, the audit."""
