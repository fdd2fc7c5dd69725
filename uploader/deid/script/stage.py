"""The script stage of de-identification: the site script, then the project script.

Built once at the edge (parsed and checked at load: a bad script never reaches a study), then
run on every instance after the profile and before the verifier.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset

from uploader.deid.policy import PrivateKey
from uploader.deid.pseudonyms import Pseudonymiser
from uploader.deid.script.check import load_script, reads, retained_private, uses
from uploader.deid.script.run import Run, SessionNumbers, snapshot
from uploader.deid.script.syntax import Script, ScriptError, TagPath
from uploader.errors import ConfigError


@dataclass
class ScriptStage:
    """The scripts of one run, what they read, and the state they share (visit numbers)."""

    scripts: tuple[Script, ...]
    variables: dict[str, str] = field(default_factory=dict)
    lookups: dict[str, dict[str, str]] = field(default_factory=dict)
    sessions: SessionNumbers = field(default_factory=SessionNumbers)
    reads: tuple[TagPath, ...] = ()

    def __post_init__(self) -> None:
        seen = {p.text: p for s in self.scripts for p in reads(s)}
        self.reads = tuple(seen.values())

    @property
    def numbers_sessions(self) -> bool:
        """True if a script numbers visits (the run must then be sequential)."""
        return any(uses(s, "makeSessionLabel") for s in self.scripts)

    @property
    def needs_modality_label(self) -> bool:
        """True if a script reads ``modalityLabel`` (the study's modality, found by a pre-pass)."""
        return any(uses(s, "modalityLabel") for s in self.scripts)

    def private_keys(self) -> list[PrivateKey]:
        """What ``retainPrivateTags`` keeps, for the private allow-list."""
        return [
            PrivateKey(step.group, step.creator or "", step.element)
            for s in self.scripts
            for step in retained_private(s)
        ]

    def snapshot(self, ds: Dataset) -> dict[str, str | None]:
        """Read, from the input, the values the scripts will read."""
        return snapshot(ds, list(self.reads))

    def run(
        self,
        out: Dataset,
        original: dict[str, str | None],
        pseudo: Pseudonymiser,
        *,
        names: dict[str, str],
        produced_uids: set[str],
        study_key: str,
    ) -> dict[str, str]:
        """Run the scripts on one output instance; return the variables as they end.

        ``names``: project, subject, session, modalityLabel, site.
        Raises:
            WithheldError: a script rejected the instance.
        """
        run = Run(
            out=out,
            original=original,
            variables={**self.variables, **names},
            pseudo=pseudo,
            produced_uids=produced_uids,
            lookups=self.lookups,
            sessions=self.sessions,
            study_key=study_key,
        )
        for script in self.scripts:
            run.execute(script)
        return run.variables


def build_stage(
    site_script: Path | None,
    project_script: str | None,
    protocol_path: Path | None,
    variables: dict[str, str],
    lookups: dict[str, dict[str, str]],
) -> ScriptStage | None:
    """Load the site and project scripts; None when there are none.

    Raises:
        ConfigError: a script is unreadable or has an error (FILE:LINE:COL: message).
    """
    scripts = []
    known = frozenset(variables)
    tables = frozenset(lookups)
    if site_script is not None:
        try:
            text = site_script.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{site_script}: cannot read the script: {exc}") from exc
        scripts.append(_load(text, str(site_script), known, tables))
    if project_script:
        where = f"{protocol_path} (deidentify.script)" if protocol_path else "project script"
        scripts.append(_load(project_script, where, known, tables))
    if not scripts:
        return None
    return ScriptStage(tuple(scripts), dict(variables), {k: dict(v) for k, v in lookups.items()})


def _load(text: str, name: str, variables: frozenset[str], lookups: frozenset[str]) -> Script:
    try:
        return load_script(text, name, variables=variables, lookups=lookups)
    except ScriptError as exc:
        raise ConfigError(f"{name}:{exc.line}:{exc.col}: {exc.message}") from exc


def load_numbers(numbers: SessionNumbers, path: Path) -> None:
    """Read visit numbers kept by an earlier run (``session_numbers.csv``), if any."""
    if not path.exists():
        return
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            numbers.labels.setdefault((row["subject"], row["template"]), {})[row["study"]] = int(
                row["number"]
            )


def save_numbers(numbers: SessionNumbers, path: Path) -> None:
    """Write the visit numbers (studies by keyed UID: nothing identifying) for the next run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["subject", "template", "study", "number"])
        for (subject, template), studies in sorted(numbers.labels.items()):
            for study, n in sorted(studies.items(), key=lambda kv: kv[1]):
                w.writerow([subject, template, study, n])
    tmp.replace(path)
