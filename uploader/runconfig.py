"""Build the frozen de-identification settings from a key, a protocol file and a site ID."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from uploader.deid.engine import Settings, TrialInfo
from uploader.deid.identifiers import StructureNames
from uploader.deid.patterns import Detector, load_site_patterns
from uploader.deid.policy import PrivatePolicy
from uploader.deid.profile import load_profile
from uploader.deid.pseudonyms import Pseudonymiser
from uploader.errors import ConfigError

if TYPE_CHECKING:
    from uploader.deid.script.stage import ScriptStage
    from uploader.protocols.model import Protocol

_SITE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def build_settings(
    key: bytes,
    protocol_path: Path | None,
    site: str,
    site_script: Path | None = None,
    site_patterns: Path | None = None,
    *,
    detector: Detector | None = None,
) -> Settings:
    """Return the settings for one run.

    ``site_patterns``: a site's pattern table to read; ``detector``: one already built from
    it (a node reads its table once for all its trials).

    Raises:
        ConfigError: bad protocol, or a site ID the patterns need but that is missing or unsafe.
    """
    if site and not set(site) <= _SITE_CHARS:
        raise ConfigError(f"site ID {site!r}: use letters, digits, '-' and '_' only")
    protocol: Protocol | None = None
    if protocol_path is not None:
        from uploader.protocols.loader import load_protocol  # pydantic only when a protocol is used

        protocol = load_protocol(protocol_path)
    pseudonymiser = Pseudonymiser(key)
    protected = structure_names(protocol)
    if detector is None:
        extra = load_site_patterns(site_patterns) if site_patterns is not None else ()
        detector = Detector(extra)
    patterns = detector
    if protocol is None:
        stage = _stage(site_script, None, None, {}, {})
        return Settings(
            profile=load_profile(),
            pseudonymiser=pseudonymiser,
            site=site,
            subject_pattern=f"{site}-{{hash:8}}" if site else "S{hash:10}",
            private=PrivatePolicy(stage.private_keys() if stage else ()),
            scripts=stage,
            protected=protected,
            patterns=patterns,
        )
    for pattern in (protocol.pseudonym.subject, protocol.pseudonym.session):
        if "{site}" in pattern and not site:
            raise ConfigError(
                f"{protocol_path}: the pattern {pattern!r} uses {{site}}: give --site"
            )
    deid = protocol.deidentify
    stage = _stage(site_script, deid.script, protocol_path, deid.variables, deid.lookups)
    keep = [t.key() for t in deid.keep_private] + (stage.private_keys() if stage else [])
    return Settings(
        profile=load_profile(frozenset(deid.options)),
        pseudonymiser=pseudonymiser,
        site=site,
        trial=TrialInfo(
            protocol_id=protocol.id,
            protocol_name=protocol.name,
            sponsor=protocol.sponsor,
            time_point=protocol.time_point,
        ),
        subject_pattern=protocol.pseudonym.subject,
        session_pattern=protocol.pseudonym.session,
        private=PrivatePolicy(keep),
        allow_burned_in=frozenset(deid.allow_burned_in),
        relabel=protocol.synonym_map(),
        scripts=stage,
        protected=protected,
        patterns=patterns,
    )


def structure_names(protocol: Protocol | None) -> StructureNames:
    """Return the ROI names the cleaner keeps exactly: TG-263 primary names, and the protocol's
    structure names and synonyms (text naming the trial's structures is not an identifier)."""
    from uploader.protocols.nomenclature import primary_names

    names = set(primary_names())
    if protocol is not None and protocol.structures is not None:
        for s in (*protocol.structures.required, *protocol.structures.optional):
            if s.name:
                names.add(s.name)
            names.update(s.synonyms)
    return StructureNames(names)


def _stage(
    site_script: Path | None,
    project_script: str | None,
    protocol_path: Path | None,
    variables: dict[str, str],
    lookups: dict[str, dict[str, str]],
) -> ScriptStage | None:
    """The script stage, or None; its parser is imported only when there is a script."""
    if site_script is None and not project_script:
        return None
    from uploader.deid.script.stage import build_stage

    return build_stage(site_script, project_script, protocol_path, variables, lookups)
