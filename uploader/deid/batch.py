"""De-identify a folder: read every file, write each verified output atomically, summarise.

Output files are named by their new UIDs under ``subject/session/series``: input names and
folders (which often carry the patient's name) never reach the output. Nothing is written
that has not passed the verifier; a file that fails is listed with its reason.
"""

from __future__ import annotations

import csv
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from uploader.deid.engine import Outcome, Settings, deidentify
from uploader.errors import ConfigError, VerificationError, WithheldError

log = logging.getLogger(__name__)


@dataclass
class Summary:
    """What happened to every input file."""

    written: int = 0
    withheld: list[tuple[str, str]] = field(default_factory=list)  # (input, reason) by policy
    not_dicom: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (input, reason)
    sessions: dict[str, set[str]] = field(default_factory=dict)  # subject -> sessions

    @property
    def ok(self) -> bool:
        """True when every input was written, withheld by policy, or is not DICOM."""
        return not self.failed

    def as_dict(self) -> dict[str, object]:
        """Return the machine-readable summary (for ``--json``)."""
        return {
            "ok": self.ok,
            "written": self.written,
            "withheld": [{"file": f, "reason": r} for f, r in self.withheld],
            "not_dicom": [{"file": f, "reason": "not a DICOM file"} for f in self.not_dicom],
            "failed": [{"file": f, "reason": r} for f, r in self.failed],
            "subjects": {s: sorted(v) for s, v in sorted(self.sessions.items())},
        }


def input_files(root: Path) -> Iterator[Path]:
    """Yield every regular file under ``root`` (or ``root`` itself), in a stable order."""
    if root.is_file():
        yield root
        return
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            yield Path(folder) / name


def read_dicom(path: Path) -> Dataset:
    """Read a DICOM file with or without preamble and file meta.

    Raises:
        InvalidDicomError: the file is not DICOM.
    """
    try:
        return dcmread(path)
    except InvalidDicomError:
        ds = dcmread(path, force=True)
        if "SOPClassUID" not in ds or "SOPInstanceUID" not in ds:
            raise
        return ds


def _atomic_write(ds: Dataset, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".partial-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            ds.save_as(f, enforce_file_format=True)
            f.flush()
            os.fsync(f.fileno())
        Path(tmp).replace(target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def output_path(out: Path, outcome: Outcome) -> Path:
    """Return where an output goes: subject/session/modality_series/sop.dcm, all pseudonymous."""
    ds = outcome.dataset
    series = str(ds.get("SeriesInstanceUID", "unknown"))
    modality = str(ds.get("Modality", "OT")) or "OT"
    folder = out / outcome.subject / outcome.session / f"{modality}_{series[-12:]}"
    return folder / f"{ds.SOPInstanceUID}.dcm"


class Mapping:
    """The link original -> pseudonym, as MIDI-B's ``patid_mapping.csv`` and ``uid_mapping.csv``."""

    def __init__(self) -> None:
        self.patients: dict[str, str] = {}
        self.uids: dict[str, str] = {}

    def add(self, original_patient_id: str, outcome: Outcome) -> None:
        """Record one instance's pseudonyms."""
        self.patients[original_patient_id] = outcome.subject
        self.uids.update(outcome.uid_map)

    def write(self, folder: Path) -> None:
        """Merge into the CSVs in ``folder`` (existing rows are kept; same key, new value wins)."""
        folder.mkdir(parents=True, exist_ok=True)
        for name, rows in (("patid_mapping.csv", self.patients), ("uid_mapping.csv", self.uids)):
            path = folder / name
            merged: dict[str, str] = {}
            if path.exists():
                with path.open(newline="", encoding="utf-8") as f:
                    merged.update((r["id_old"], r["id_new"]) for r in csv.DictReader(f))
            merged.update(rows)
            tmp = path.with_suffix(".tmp")
            with tmp.open("w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(["id_old", "id_new"])
                w.writerows(sorted(merged.items()))
            tmp.replace(path)


def anonymise_tree(
    src: Path,
    out: Path,
    settings: Settings,
    mapping: Mapping | None = None,
    progress: Callable[[int], None] | None = None,
) -> Summary:
    """De-identify every file under ``src`` into ``out``; return the summary.

    Raises:
        ConfigError: ``out`` lies inside ``src`` (outputs would be read back as inputs).
    """
    src, out = src.resolve(), out.resolve()
    if out == src or src in out.parents:
        raise ConfigError(f"{out}: the output folder must not be inside the input folder")
    summary = Summary()
    for path in input_files(src):
        rel = str(path.relative_to(src)) if path != src else path.name
        _one(path, rel, out=out, settings=settings, summary=summary, mapping=mapping)
        if progress is not None:
            progress(1)
    return summary


def _one(
    path: Path,
    rel: str,
    *,
    out: Path,
    settings: Settings,
    summary: Summary,
    mapping: Mapping | None,
) -> None:
    try:
        ds = read_dicom(path)
    except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, KeyError) as exc:
        if isinstance(exc, OSError) and not isinstance(exc, EOFError):
            summary.failed.append((rel, f"cannot read: {exc.strerror or exc}"))
        else:
            summary.not_dicom.append(rel)
        return
    original_pid = str(ds.get("PatientID", "") or "")
    try:
        outcome = deidentify(ds, settings)
        target = output_path(out, outcome)
        _atomic_write(outcome.dataset, target)
    except WithheldError as exc:
        summary.withheld.append((rel, exc.reason))
        return
    except VerificationError as exc:
        summary.failed.append((rel, f"withheld, verification failed: {exc}"))
        log.warning("verification failed for one input (%d problems)", len(exc.problems))
        return
    except Exception as exc:
        summary.failed.append((rel, f"cannot de-identify: {type(exc).__name__}: {exc}"))
        log.warning("cannot de-identify one input: %s", type(exc).__name__)
        return
    summary.written += 1
    summary.sessions.setdefault(outcome.subject, set()).add(outcome.session)
    if mapping is not None:
        mapping.add(original_pid, outcome)
