"""The trials this node serves: protocols by ID, their settings, manual subject IDs."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

from uploader.deid.engine import Settings
from uploader.deid.patterns import Detector, load_site_patterns
from uploader.errors import ConfigError
from uploader.node.protocols import load_protocols
from uploader.protocols.model import Protocol
from uploader.runconfig import build_settings


class Trials:
    """Loads ``protocols_dir/*.yaml`` once; builds each trial's settings once."""

    def __init__(
        self,
        protocols_dir: Path,
        key: bytes,
        site: str,
        site_script: Path | None,
        manual_ids: dict[str, Path],
        *,
        site_patterns: Path | None = None,
    ) -> None:
        self.key, self.site, self.site_script = key, site, site_script
        # the site's pattern table, read once: a bad one stops the node at start, named
        extra = load_site_patterns(site_patterns) if site_patterns is not None else ()
        self.patterns = Detector(extra)
        # a bad protocol, or two with one ID, stops the node at start (the file is named)
        self.protocols: dict[str, tuple[Protocol, Path]] = load_protocols(protocols_dir)
        self._settings: dict[str, Settings] = {}
        self._manual: dict[str, dict[str, str]] = {
            pid: _read_manual(path) for pid, path in manual_ids.items()
        }

    def get(self, protocol_id: str) -> Protocol | None:
        """The protocol, or None if this node does not know it."""
        found = self.protocols.get(protocol_id)
        return found[0] if found else None

    def settings(self, protocol_id: str, relabel: dict[str, str] | None = None) -> Settings:
        """The de-identification settings of a trial (plus staff relabels for one study)."""
        if protocol_id not in self._settings:
            _protocol, path = self.protocols[protocol_id]
            self._settings[protocol_id] = build_settings(
                self.key, path, self.site, self.site_script, detector=self.patterns
            )
        base = self._settings[protocol_id]
        if relabel:
            return dataclasses.replace(base, relabel={**base.relabel, **relabel})
        return base

    def manual_subject(self, protocol_id: str, patient_id: str) -> tuple[bool, str | None]:
        """(the trial uses manual IDs, the patient's subject ID or None if missing)."""
        table = self._manual.get(protocol_id)
        if table is None:
            return False, None
        return True, table.get(patient_id)


def _read_manual(path: Path) -> dict[str, str]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the manual ID table: {exc.strerror}") from exc
    if rows and not {"PatientID", "SubjectID"} <= set(rows[0]):
        raise ConfigError(f"{path}: the manual ID table needs columns PatientID,SubjectID")
    return {r["PatientID"].strip(): r["SubjectID"].strip() for r in rows if r.get("PatientID")}
