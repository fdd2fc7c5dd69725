"""``uploader verify``: the knowledge-free check of a folder of supposedly de-identified files.

Above both the de-identification (`uploader.deid`) and the protocols (`uploader.protocols`):
the protocol, if given, says which private attributes and burned-in kinds its output may keep.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydicom.errors import InvalidDicomError

from uploader.deid.batch import input_files, read_dicom
from uploader.deid.patterns import Detector, load_site_patterns
from uploader.deid.policy import PrivatePolicy
from uploader.deid.profile import Profile, load_table
from uploader.deid.verify import audit, declared_options
from uploader.protocols.loader import load_protocol


@dataclass
class Report:
    """Per-file problems; a file passes when its list is empty."""

    files: list[tuple[str, list[str]]] = field(default_factory=list)

    @property
    def passed(self) -> int:
        """Number of files without problems."""
        return sum(1 for _f, p in self.files if not p)

    @property
    def failed(self) -> int:
        """Number of files with at least one problem."""
        return len(self.files) - self.passed

    def as_dict(self) -> dict[str, object]:
        """Return the machine-readable report (for ``--json``)."""
        return {
            "passed": self.passed,
            "failed": self.failed,
            "files": [{"file": f, "ok": not p, "problems": p} for f, p in self.files],
        }


def audit_tree(
    root: Path, protocol_path: Path | None = None, site_patterns: Path | None = None
) -> Report:
    """Check every file under ``root``; the options each file declares select its profile.

    ``site_patterns``: a site's pattern table, whose audit rows kept text must not hold.
    Raises:
        ConfigError: the protocol file or the pattern table is invalid.
    """
    detector = Detector(load_site_patterns(site_patterns), audit=True) if site_patterns else None
    policy, allow_burned_in = PrivatePolicy(), False
    if protocol_path is not None:
        protocol = load_protocol(protocol_path)
        policy = PrivatePolicy(t.key() for t in protocol.deidentify.keep_private)
        allow_burned_in = bool(protocol.deidentify.allow_burned_in)
    table = load_table()
    profiles: dict[frozenset[object], Profile] = {}
    report = Report()
    base = root if root.is_dir() else root.parent
    for path in input_files(root):
        rel = str(path.relative_to(base))
        try:
            ds = read_dicom(path)
        except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, KeyError):
            report.files.append((rel, ["not a readable DICOM file"]))
            continue
        options = declared_options(ds)
        profile = profiles.get(options)
        if profile is None:
            profile = profiles[options] = Profile(table, options)
        found = audit(ds, profile, policy, allow_burned_in, patterns=detector)
        report.files.append((rel, found))
    return report
