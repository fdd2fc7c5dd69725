"""Validation of one study against its trial protocol: named checks, pass / fail / warn.

Messages are written for a radiographer ("no CT in the study: the protocol requires it"), and
never quote patient data: only modalities, ROI names, counts and the rule's own numbers.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset

from uploader.protocols.model import AttributeRule, Protocol, Structure
from uploader.protocols.nomenclature import check_name, suggest
from uploader.protocols.patterns import search
from uploader.protocols.study import RT_MODALITIES, Study, rois


@dataclass(frozen=True)
class Check:
    """One named check and its outcome."""

    check: str
    status: str  # pass | fail | warn
    message: str


@dataclass
class Report:
    """The outcome of validating one study: its checks and the ROI relabel map."""

    protocol: str
    checks: list[Check] = field(default_factory=list)
    relabel: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True when no check failed (warnings do not fail a study)."""
        return all(c.status != "fail" for c in self.checks)

    def add(self, check: str, status: str, message: str) -> None:
        """Record one check."""
        self.checks.append(Check(check, status, message))

    def as_dict(self) -> dict[str, Any]:
        """The machine-readable report (``--json``)."""
        return {
            "protocol": self.protocol,
            "passed": self.passed,
            "checks": [c.__dict__ for c in self.checks],
            "relabel": self.relabel,
        }


def validate_study(protocol: Protocol, study: Study) -> Report:
    """Validate a study; return the report (never raises for bad data: that is a failed check)."""
    report = Report(protocol.id)
    if len({i.study_uid for i in study.instances}) > 1:
        report.add("study", "warn", "the folder holds more than one study; checked as one")
    _modalities(protocol, study, report)
    _series(protocol, study, report)
    if protocol.structures is not None:
        _structures(protocol, study, report)
    _references(study, report)
    for rule in protocol.rules:
        _rule(rule, study, report)
    return report


def _modalities(protocol: Protocol, study: Study, report: Report) -> None:
    mods = protocol.modalities
    present = Counter(i.modality for i in study.instances)
    for m in mods.required:
        if present[m]:
            report.add(f"modality:{m}", "pass", f"{m} present ({present[m]} instance(s))")
        else:
            report.add(f"modality:{m}", "fail", f"no {m} in the study: the protocol requires it")
    for m in mods.forbidden:
        if present[m]:
            report.add(f"modality:{m}", "fail", f"{m} must not be sent for this trial")
    expected = {*mods.required, *mods.optional, *mods.forbidden}
    if expected:
        for m in sorted(set(present) - expected):
            report.add(f"modality:{m}", "warn", f"{m} is not expected by the protocol")


def _series(protocol: Protocol, study: Study, report: Report) -> None:
    for m, count in protocol.series.items():
        n = len(study.series(m))
        if n < count.min or (count.max is not None and n > count.max):
            most = "" if count.max is None else f", at most {count.max}"
            report.add(
                f"series:{m}",
                "fail",
                f"{n} {m} series; the protocol wants at least {count.min}{most}",
            )
        else:
            report.add(f"series:{m}", "pass", f"{n} {m} series")


def _forbidden(name: str, forbidden: list[str]) -> bool:
    for f in forbidden:
        if len(f) > 2 and f.startswith("/") and f.endswith("/"):
            if search(f[1:-1], name):
                return True
        elif name == f:
            return True
    return False


def _roi_name(protocol: Protocol, name: str, report: Report) -> str:
    """Check one ROI name; return the name it will carry (after any relabel)."""
    s = protocol.structures
    assert s is not None
    wanted = [x for x in (*s.required, *s.optional) if x.name is not None]
    names = {x.name for x in wanted if x.name}
    synonyms = protocol.synonym_map()
    check = f"roi:{name}"
    if _forbidden(name, s.forbidden):
        report.add(check, "fail", f"ROI {name!r} must not be sent for this trial")
        return name
    if name in names:
        report.add(check, "pass", f"ROI {name!r} is a protocol name")
        return name
    if name in synonyms:
        report.relabel[name] = synonyms[name]
        report.add(check, "pass", f"ROI {name!r} will be relabelled {synonyms[name]!r}")
        return synonyms[name]
    folded = {n.lower(): n for n in names}
    if name.lower() in folded:
        new = folded[name.lower()]
        report.relabel[name] = new
        report.add(check, "warn", f"ROI {name!r} differs from {new!r} only in case: relabelled")
        return new
    if any(x.pattern and x.matches(name) for x in (*s.required, *s.optional)):
        report.add(check, "pass", f"ROI {name!r} matches a protocol pattern")
        return name
    if s.naming == "none":
        report.add(check, "pass", f"ROI {name!r} (the protocol sets no nomenclature)")
        return name
    reason = check_name(name)
    if reason is None:
        report.add(check, "pass", f"ROI {name!r} follows TG-263")
        return name
    close = suggest(name, extra=tuple(sorted(names)))
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    report.add(check, "fail", f"ROI {name!r}: {reason}{hint}")
    return name


def _structures(protocol: Protocol, study: Study, report: Report) -> None:
    s = protocol.structures
    assert s is not None
    found: dict[str, int] = {}  # final ROI name -> contour points (summed over structure sets)
    for inst in study.of("RTSTRUCT"):
        try:
            items = rois(inst.header)
        except ValueError as exc:
            report.add(f"rtstruct:{inst.rel}", "fail", f"RTSTRUCT {inst.rel}: {exc}")
            continue
        if not items:
            report.add(f"rtstruct:{inst.rel}", "fail", f"RTSTRUCT {inst.rel} has no ROIs")
        for roi in items:
            final = _roi_name(protocol, roi.name, report)
            found[final] = found.get(final, 0) + roi.points
    required = {id(x) for x in s.required}
    for struct in (*s.required, *s.optional):
        _structure_present(struct, id(struct) in required, found, report)
    claimed = {n for x in (*s.required, *s.optional) for n in found if x.matches(n)}
    for name, points in sorted(found.items()):
        if points == 0 and name not in claimed:
            report.add(f"empty:{name}", "warn", f"ROI {name!r} has no contour")


def _structure_present(
    struct: Structure, required: bool, found: dict[str, int], report: Report
) -> None:
    hits = [n for n in found if struct.matches(n)]
    check = f"structure:{struct.label}"
    if not hits:
        if required:
            report.add(check, "fail", f"required structure {struct.label} is missing")
        return
    empty = [n for n in hits if found[n] == 0]
    if empty and len(empty) == len(hits) and not struct.allow_empty:
        status = "fail" if required else "warn"
        report.add(check, status, f"structure {struct.label} is present but has no contour")
    else:
        report.add(check, "pass", f"structure {struct.label} present ({', '.join(sorted(hits))})")


def _refs(items: Any, keyword: str) -> list[str]:
    return [str(i.get(keyword, "") or "") for i in items or []]


def _references(study: Study, report: Report) -> None:
    sops = {i.sop_uid for i in study.instances}
    images = [i for i in study.instances if i.modality not in RT_MODALITIES]
    frames = {i.frame_uid for i in images if i.frame_uid}
    series = {i.series_uid for i in images}
    for inst in study.of("RTSTRUCT"):
        _rtstruct_refs(inst.header, inst.rel, (sops, frames, series), report)
    for inst in study.of("RTPLAN"):
        wanted = _refs(
            inst.header.get("ReferencedStructureSetSequence"), "ReferencedSOPInstanceUID"
        )
        _one_ref(
            f"reference:{inst.rel}",
            ("RTPLAN", "RTSTRUCT"),
            wanted,
            {i.sop_uid for i in study.of("RTSTRUCT")},
            report,
        )
    for inst in study.of("RTDOSE"):
        wanted = _refs(inst.header.get("ReferencedRTPlanSequence"), "ReferencedSOPInstanceUID")
        _one_ref(
            f"reference:{inst.rel}",
            ("RTDOSE", "RTPLAN"),
            wanted,
            {i.sop_uid for i in study.of("RTPLAN")},
            report,
        )
        if frames and inst.frame_uid and inst.frame_uid not in frames:
            report.add(
                f"frame:{inst.rel}", "fail", "the RTDOSE is not in the images' frame of reference"
            )


def _one_ref(
    check: str, kinds: tuple[str, str], wanted: list[str], present: set[str], report: Report
) -> None:
    what, target = kinds
    if not wanted:
        report.add(check, "warn", f"the {what} references no {target}")
    elif all(w in present for w in wanted):
        report.add(check, "pass", f"the {what} references an {target} in the study")
    else:
        report.add(check, "fail", f"the {what} references an {target} that is not in the study")


def _rtstruct_refs(
    ds: Dataset, rel: str, known: tuple[set[str], set[str], set[str]], report: Report
) -> None:
    sops, frames, series = known
    try:
        ref_frames, ref_series, ref_images = set(), set(), set()
        for fr in ds.get("ReferencedFrameOfReferenceSequence") or []:
            ref_frames.add(str(fr.get("FrameOfReferenceUID", "")))
            for st in fr.get("RTReferencedStudySequence") or []:
                for se in st.get("RTReferencedSeriesSequence") or []:
                    ref_series.add(str(se.get("SeriesInstanceUID", "")))
                    ref_images.update(
                        _refs(se.get("ContourImageSequence"), "ReferencedSOPInstanceUID")
                    )
        for roi in ds.get("ROIContourSequence") or []:
            for contour in roi.get("ContourSequence") or []:
                ref_images.update(
                    _refs(contour.get("ContourImageSequence"), "ReferencedSOPInstanceUID")
                )
    except (TypeError, ValueError, KeyError, AttributeError, EOFError) as exc:
        report.add(
            f"reference:{rel}",
            "fail",
            f"RTSTRUCT {rel}: references unreadable ({type(exc).__name__})",
        )
        return
    check = f"reference:{rel}"
    if not ref_frames - {""} <= frames:
        report.add(
            check, "fail", "the RTSTRUCT's frame of reference is not that of any image in the study"
        )
    elif ref_series and not ref_series <= series:
        report.add(
            check, "fail", "the RTSTRUCT references an image series that is not in the study"
        )
    elif missing := ref_images - sops:
        report.add(
            check,
            "fail",
            f"{len(missing)} of {len(ref_images)} images the RTSTRUCT references are missing",
        )
    else:
        report.add(check, "pass", f"the RTSTRUCT's references resolve ({len(ref_images)} images)")


def _rule(rule: AttributeRule, study: Study, report: Report) -> None:
    targets = [i for i in study.instances if rule.modality in (None, i.modality)]
    where = f"{rule.modality} " if rule.modality else ""
    check = f"rule:{where}{rule.attribute}"
    if not targets:
        report.add(check, "warn", f"no {where}instances to check {rule.attribute} on")
        return
    bad = [i for i in targets if not _holds(rule, i.header.get(rule.attribute))]
    if not bad:
        report.add(
            check, "pass", f"{rule.attribute} as required on {len(targets)} {where}instance(s)"
        )
        return
    what = rule.message or f"{rule.attribute} {_describe(rule)}"
    report.add(
        check,
        rule.severity,
        f"{what}: {len(bad)} of {len(targets)} {where}instance(s) do not comply",
    )


def _describe(rule: AttributeRule) -> str:
    parts = []
    if rule.min is not None:
        parts.append(f">= {rule.min:g}")
    if rule.max is not None:
        parts.append(f"<= {rule.max:g}")
    if rule.equals is not None:
        parts.append(f"= {rule.equals}")
    if rule.one_of is not None:
        parts.append(f"one of {', '.join(rule.one_of)}")
    if rule.matches is not None:
        parts.append(f"matching {rule.matches}")
    if rule.present is not None:
        parts.append("present" if rule.present else "absent")
    return "must be " + " and ".join(parts)


def _holds(rule: AttributeRule, value: Any) -> bool:
    text = "" if value is None else str(value).strip()
    if rule.present is not None and bool(text) != rule.present:
        return False
    if not text:
        return rule.present is False or all(
            getattr(rule, k) is None for k in ("min", "max", "equals", "one_of", "matches")
        )
    if rule.min is not None or rule.max is not None:
        try:
            values = [
                float(v)
                for v in (
                    value
                    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue"
                    else [value]
                )
            ]
        except (TypeError, ValueError):
            return False
        if rule.min is not None and min(values) < rule.min:
            return False
        if rule.max is not None and max(values) > rule.max:
            return False
    if rule.equals is not None and text != rule.equals:
        return False
    if rule.one_of is not None and text not in rule.one_of:
        return False
    return rule.matches is None or search(rule.matches, text)
