"""DicomEdit-style site and project scripts: parsed and checked at load, run after the profile."""
