"""Relabelling ROIs to the protocol's names (synonyms declared by the trial)."""

from __future__ import annotations

from pydicom.dataset import Dataset


def relabel(ds: Dataset, mapping: dict[str, str]) -> int:
    """Rename ROIs (StructureSetROISequence ROIName) by ``mapping``; return how many changed."""
    changed = 0
    for item in ds.get("StructureSetROISequence") or []:
        name = str(item.get("ROIName", "") or "")
        if name in mapping and mapping[name] != name:
            item.ROIName = mapping[name]
            changed += 1
    return changed
