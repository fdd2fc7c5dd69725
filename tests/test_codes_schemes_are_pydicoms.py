"""The coding schemes the cleaner takes for standard ones are exactly those pydicom packages
(written out so that no run imports pydicom's 0.1-0.3 s concept dictionary to learn them)."""

from __future__ import annotations

from pydicom.sr import _concepts_dict

from uploader.deid.codes import PYDICOM_SCHEMES


def test_the_written_out_schemes_are_pydicoms() -> None:
    assert frozenset(_concepts_dict.concepts) == PYDICOM_SCHEMES
