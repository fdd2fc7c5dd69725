"""The anonymised node: intake with a second check, review queue, push to the repository."""
