"""De-identification: the Annex E profile as data, keyed pseudonyms, the engine, verifiers."""
