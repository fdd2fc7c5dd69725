"""A study's instances as the pages need them: headers grouped into series, RT structures,
the RTPLAN summary, the header tree; read once without pixels and kept while the study is open.
Both nodes' pages use it: each gives the function that lists a study's (SOP UID, path) pairs.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread

from uploader.web.contours import Roi, read_rois
from uploader.web.dose import DoseGrid, read_dose
from uploader.web.render import Slice, sort_slices

#: A study's instances as (SOP Instance UID, path of its file), given its row id.
Instances = Callable[[int], list[tuple[str, str]]]
_BINARY = {"OB", "OW", "OF", "OD", "OL", "OV", "UN"}
_SHOWN = 200  # characters of a value shown in the header viewer
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def series_key(value: str) -> str:
    """A series' name in the pages' paths: its Series Instance UID when it is one (digits and
    dots, 64 at most), else ``x`` and a digest of the value, so that whatever a sender puts
    there (``../../links.csv?``) never becomes part of a URL the page fetches."""
    if len(value) <= 64 and _UID.fullmatch(value):
        return value
    return "x" + hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:24]


@dataclass
class Series:
    """One series of a study."""

    uid: str  # ``series_key`` of its Series Instance UID
    number: int
    modality: str
    description: str
    frame: str  # FrameOfReferenceUID
    headers: list[Any] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)  # SOP Instance UID -> file
    slices: list[Slice] = field(default_factory=list)

    @property
    def is_image(self) -> bool:
        """True when its instances carry pixels to show as slices."""
        return self.modality not in ("RTSTRUCT", "RTPLAN", "RTDOSE", "SR", "PR", "KO")


@dataclass
class StudyView:
    """What the study page shows from the files."""

    series: list[Series]
    rois: dict[str, list[Roi]]  # FrameOfReferenceUID -> ROIs on it ("" when unknown)
    plans: list[dict[str, Any]]
    unreadable: int
    doses: dict[str, DoseGrid] = field(default_factory=dict)  # FrameOfReferenceUID -> grid


class StudyFiles:
    """Reads and keeps the headers of the studies being looked at (a few at a time)."""

    def __init__(self, instances: Instances, keep: int = 8) -> None:
        self.instances, self.keep = instances, keep
        self._views: dict[tuple[int, int], StudyView] = {}
        self._lock = threading.Lock()

    def view(self, study_id: int) -> StudyView:
        """The study's series, structures and plans (re-read when instances were added)."""
        instances = self.instances(study_id)
        key = (study_id, len(instances))
        with self._lock:
            found = self._views.get(key)
        if found is not None:
            return found
        made = _read(instances)
        with self._lock:
            if len(self._views) >= self.keep:
                self._views.pop(next(iter(self._views)))
            self._views[key] = made
        return made

    def series(self, study_id: int, uid: str) -> Series | None:
        """One series of a study."""
        return next((s for s in self.view(study_id).series if s.uid == uid), None)

    def path(self, study_id: int, sop_uid: str) -> Path | None:
        """The stored file of one instance of the study."""
        for s in self.view(study_id).series:
            if sop_uid in s.paths:
                return s.paths[sop_uid]
        return None


def _read(instances: list[tuple[str, str]]) -> StudyView:
    series: dict[str, Series] = {}
    rois: dict[str, list[Roi]] = {}
    plans: list[dict[str, Any]] = []
    unreadable = 0
    doses: dict[str, tuple[bool, DoseGrid]] = {}
    for sop_uid, path in instances:
        try:
            _add(sop_uid, path, series, (rois, plans, doses))
        except Exception:  # gone (retention), unreadable, or a value that is not what its VR
            unreadable += 1  # says (a name in SeriesNumber): counted, not fatal, never quoted
    for s in series.values():
        if s.is_image:
            s.slices = sort_slices(s.headers)
    ordered = sorted(series.values(), key=lambda s: (not s.is_image, s.number, s.uid))
    return StudyView(ordered, rois, plans, unreadable, {f: g for f, (_w, g) in doses.items()})


def _add(
    sop_uid: str,
    path: str,
    series: dict[str, Series],
    found: tuple[dict[str, list[Roi]], list[dict[str, Any]], dict[str, tuple[bool, DoseGrid]]],
) -> None:
    """Read one instance into the study's series and ``found`` (structures, plans, doses)."""
    rois, plans, doses = found
    ds = dcmread(path, stop_before_pixels=True)
    uid = series_key(str(ds.get("SeriesInstanceUID", "")))
    s = series.get(uid)
    if s is None:
        s = series[uid] = Series(
            uid,
            _number(ds),
            str(ds.get("Modality", "")),
            str(ds.get("SeriesDescription", "") or ""),
            str(ds.get("FrameOfReferenceUID", "") or ""),
        )
    s.headers.append(ds)
    s.paths[sop_uid] = Path(path)
    if s.modality == "RTSTRUCT":
        full = dcmread(path)
        for frame in _frames(full) or [""]:
            rois.setdefault(frame, []).extend(read_rois(full))
    if s.modality == "RTPLAN":
        plans.append(plan_summary(ds))
    if s.modality == "RTDOSE":
        full = dcmread(path)
        grid = read_dose(full)
        whole = str(full.get("DoseSummationType", "")) == "PLAN"
        frame = str(full.get("FrameOfReferenceUID", "") or "")
        if grid is not None and (frame not in doses or (whole and not doses[frame][0])):
            doses[frame] = (whole, grid)  # the plan's sum before a beam's share


def _number(ds: Any) -> int:
    """The series number, 0 when it is missing or is not a number (whatever it holds)."""
    try:
        return int(ds.get("SeriesNumber", 0) or 0)
    except (ValueError, TypeError, OverflowError):
        return 0


def _frames(ds: Any) -> list[str]:
    return [
        str(item.FrameOfReferenceUID)
        for item in ds.get("ReferencedFrameOfReferenceSequence", [])
        if "FrameOfReferenceUID" in item
    ]


def rois_for(view: StudyView, series: Series) -> list[Roi]:
    """The structures drawn on a series: those on its frame of reference (or of unknown frame)."""
    if series.frame and series.frame in view.rois:
        return view.rois[series.frame] + view.rois.get("", [])
    return (
        [r for rs in view.rois.values() for r in rs] if not series.frame else view.rois.get("", [])
    )


def dose_for(view: StudyView, series: Series) -> DoseGrid | None:
    """The dose grid drawn on a series: the one on its frame of reference."""
    return view.doses.get(series.frame) or (view.doses.get("") if not series.frame else None)


def plan_summary(ds: Any) -> dict[str, Any]:
    """An RTPLAN in brief: label, name, fractions, prescription, beams."""
    fractions = [
        int(fg.get("NumberOfFractionsPlanned", 0) or 0)
        for fg in ds.get("FractionGroupSequence", [])
    ]
    doses = [
        {
            "description": str(d.get("DoseReferenceDescription", "") or ""),
            "type": str(d.get("DoseReferenceType", "") or ""),
            "dose": d.get("TargetPrescriptionDose", ""),
        }
        for d in ds.get("DoseReferenceSequence", [])
    ]
    beams = []
    for b in ds.get("BeamSequence", []):
        points = b.get("ControlPointSequence", [])
        gantry = points[0].get("GantryAngle", "") if points else ""
        beams.append(
            {
                "number": b.get("BeamNumber", ""),
                "name": str(b.get("BeamName", "") or ""),
                "type": str(b.get("BeamType", "") or ""),
                "radiation": str(b.get("RadiationType", "") or ""),
                "gantry": gantry,
                "control_points": len(points),
            }
        )
    return {
        "label": str(ds.get("RTPlanLabel", "") or ""),
        "name": str(ds.get("RTPlanName", "") or ""),
        "geometry": str(ds.get("RTPlanGeometry", "") or ""),
        "fractions": fractions,
        "doses": doses,
        "beams": beams,
    }


def header_tree(ds: Any, query: str = "") -> list[dict[str, Any]]:
    """Every element of a header as a tree (sequences hold items of elements); with a query,
    only elements whose tag, keyword or value contain it, and the sequences leading to them."""
    q = query.strip().lower()
    out = []
    for elem in ds:
        tag = f"({elem.tag.group:04X},{elem.tag.element:04X})"
        node: dict[str, Any] = {"tag": tag, "keyword": elem.keyword or "", "vr": elem.VR}
        if elem.VR == "SQ":
            items = [header_tree(item, query) for item in elem.value]
            node["children"] = items
            node["value"] = f"{len(elem.value)} item(s)"
            hit = not q or any(items) or q in f"{tag} {node['keyword']}".lower()
            if q and not hit:
                continue
        else:
            node["value"] = _value(elem)
            text = f"{tag} {node['keyword']} {node['value']}".lower()
            if q and q not in text:
                continue
        out.append(node)
    return out


def _value(elem: Any) -> str:
    if elem.VR in _BINARY or elem.tag == 0x7FE00010:
        length = len(elem.value) if isinstance(elem.value, bytes | bytearray) else 0
        return f"<{length} bytes>"
    text = str(elem.value) if elem.value is not None else ""
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "…"
