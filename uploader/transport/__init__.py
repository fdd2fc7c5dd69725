"""Transport to the next hop: DICOMweb STOW-RS over HTTPS (anonymised node or repository)."""
