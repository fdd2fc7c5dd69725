"""The identifiable node: ingest, store, opt-out, validation, pseudonymisation, forwarding."""
