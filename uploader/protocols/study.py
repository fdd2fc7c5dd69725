"""A study on disk, indexed for validation: each instance's identity, references and ROIs.

Only headers are read (pixel data never); contour numbers stay undecoded. A file that is not
DICOM is skipped and listed; a folder without any DICOM is an error naming the folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from uploader.deid.batch import input_files
from uploader.dicomfile import read_dicom
from uploader.errors import ConfigError

RT_MODALITIES = frozenset({"RTSTRUCT", "RTPLAN", "RTDOSE"})


@dataclass
class Roi:
    """One ROI of an RTSTRUCT: its number, name and how many contour points it has."""

    number: int
    name: str
    points: int


@dataclass
class Instance:
    """What validation needs of one instance (the full header only for RT objects)."""

    rel: str
    modality: str
    sop_uid: str
    series_uid: str
    study_uid: str
    frame_uid: str
    header: Dataset


@dataclass
class Study:
    """The instances of one study folder."""

    root: Path
    instances: list[Instance] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # not DICOM

    def of(self, modality: str) -> list[Instance]:
        """Return the instances of one modality."""
        return [i for i in self.instances if i.modality == modality]

    @property
    def modalities(self) -> set[str]:
        """The modalities present."""
        return {i.modality for i in self.instances}

    def series(self, modality: str) -> set[str]:
        """Series Instance UIDs of one modality."""
        return {i.series_uid for i in self.of(modality)}


def _s(ds: Dataset, keyword: str) -> str:
    return str(ds.get(keyword, "") or "").strip()


def load_study(root: Path) -> Study:
    """Index every DICOM file under ``root``.

    Raises:
        ConfigError: ``root`` does not exist or holds no DICOM file.
    """
    if not root.exists():
        raise ConfigError(f"{root}: no such file or folder")
    base = root if root.is_dir() else root.parent
    study = study_from_files(root, [(p, str(p.relative_to(base))) for p in input_files(root)])
    if not study.instances:
        raise ConfigError(f"{root}: no DICOM files found")
    return study


def study_from_files(root: Path, files: list[tuple[Path, str]]) -> Study:
    """Index the given (path, display name) files; unreadable ones are listed as skipped."""
    study = Study(root)
    for path, rel in files:
        try:
            ds = read_dicom(path, stop_before_pixels=True)
        except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, KeyError):
            study.skipped.append(rel)
            continue
        study.instances.append(
            Instance(
                rel=rel,
                modality=_s(ds, "Modality") or "OT",
                sop_uid=_s(ds, "SOPInstanceUID"),
                series_uid=_s(ds, "SeriesInstanceUID"),
                study_uid=_s(ds, "StudyInstanceUID"),
                frame_uid=_s(ds, "FrameOfReferenceUID"),
                header=ds,
            )
        )
    return study


def rois(ds: Dataset) -> list[Roi]:
    """Return the ROIs of an RTSTRUCT with their contour point counts.

    Raises:
        ValueError: the structure set's sequences cannot be read (the message says which).
    """
    try:
        points: dict[int, int] = {}
        for item in ds.get("ROIContourSequence") or []:
            total = 0
            for contour in item.get("ContourSequence") or []:
                n = contour.get("NumberOfContourPoints")
                total += int(n) if n is not None else _count_points(contour)
            points[int(item.get("ReferencedROINumber", -1))] = total
        return [
            Roi(
                int(r.get("ROINumber", -1)),
                str(r.get("ROIName", "") or ""),
                points.get(int(r.get("ROINumber", -1)), 0),
            )
            for r in ds.get("StructureSetROISequence") or []
        ]
    except (TypeError, ValueError, KeyError, AttributeError, EOFError) as exc:
        raise ValueError(f"its ROI sequences cannot be read ({type(exc).__name__})") from exc


def _count_points(contour: Any) -> int:
    raw = contour.get_item(0x30060050)
    if raw is None or raw.value is None:
        return 0
    value = raw.value
    return (value.count(b"\\") + 1) // 3 if isinstance(value, bytes) and value else len(value) // 3
