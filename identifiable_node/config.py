"""The identifiable node's configuration: one YAML file, validated, secrets read from files.

Every setting has a default and a description here; docs/identifiable-node.md lists them all
(a test checks). Errors name the key and the file; secrets never appear in errors or logs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from uploader.node.config import load_yaml_model
from uploader.relay import parse_routes
from uploader.web.settings import WebSettings


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeSettings(_Section):
    """Where the node keeps its state, and who it is."""

    data_dir: Path = Field(
        Path("/data"), description="store, spool, outbox and quarantine live here"
    )
    key_file: Path = Field(
        Path("/run/secrets/site_key"), description="the site pseudonymisation key"
    )
    site: str = Field("SITE01", description="site ID: ClinicalTrialSiteID and {site} in patterns")
    protocols_dir: Path = Field(
        Path("/etc/uploader/protocols"), description="trial protocols (*.yaml)"
    )
    default_protocol: str | None = Field(None, description="protocol ID for studies with no other")
    site_script: Path | None = Field(None, description="the site-wide DicomEdit-style script")
    site_patterns: Path | None = Field(
        None,
        description="the site's extra pattern table (JSON or YAML, the packaged table's shape): "
        "its clean rows are struck from kept text, its audit rows make the verifier refuse",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")


class FolderSettings(_Section):
    """The watched folder (also a network share: polling catches what events miss)."""

    enabled: bool = Field(True, description="watch this folder")
    path: Path = Field(Path("/incoming"), description="folder to take DICOM files from")
    poll_interval_s: float = Field(5.0, gt=0, description="seconds between polling scans")
    watch_events: bool = Field(True, description="also react to file system events (watchdog)")
    stable_s: float = Field(
        2.0, ge=0, description="a file is taken once size and mtime held this long"
    )
    after: Literal["move", "delete"] = Field(
        "move", description="taken files move to processed/ under data_dir, or are deleted"
    )
    protocol_from_subfolder: bool = Field(
        True, description="incoming/<protocol id>/... selects the trial"
    )


class ScpSettings(_Section):
    """The C-STORE receiver."""

    enabled: bool = Field(True, description="run the C-STORE SCP")
    ae_title: str = Field("UPLOADER", max_length=16, description="our AE title")
    host: str = Field("0.0.0.0", description="address to listen on")  # noqa: S104 - a container port
    port: int = Field(11112, ge=0, le=65535, description="port to listen on (0: any free port)")
    allowed_calling_aets: list[str] = Field(
        default_factory=list, description="calling AE titles accepted (empty: any)"
    )
    protocols_by_called_aet: dict[str, str] = Field(
        default_factory=dict, description="called AE title -> protocol ID"
    )
    max_associations: int = Field(10, ge=1, description="concurrent associations")
    timeout_s: float = Field(
        60.0, gt=0, description="seconds of silence before an association is aborted"
    )
    max_instance_mb: int = Field(
        1024, ge=1, description="a larger instance aborts its association (a memory guard)"
    )
    journal_mb: int = Field(
        512,
        ge=0,
        description="size of the ingest journal under data_dir (0: a durable file per instance)",
    )
    sop_classes: list[str] = Field(
        default_factory=list,
        description="storage SOP class UIDs accepted (empty: every storage class)",
    )
    transfer_syntaxes: list[str] = Field(
        default_factory=list,
        description="transfer syntax UIDs accepted (empty: all; compressed stored as received)",
    )


class StudySettings(_Section):
    """When a study is complete."""

    quiet_period_s: float = Field(60.0, ge=0, description="no new instance for this long")
    review_when_cleaned: bool = Field(
        True,
        description="send a study to review when cleaning struck part of a kept value "
        "(a name in an ROI name or a description) instead of forwarding it",
    )
    complete_timeout_s: float = Field(
        900.0, ge=0, description="complete after this long even without the required modalities"
    )


class OptOutSettings(_Section):
    """The national data opt-out list."""

    file: Path | None = Field(None, description="one NHS number per line; none: no check")
    mode: Literal["deny", "allow"] = Field(
        "deny", description="deny: listed patients are blocked; allow: only listed ones may go"
    )


class ForwardSettings(_Section):
    """Forwarding to the anonymised node (STOW-RS)."""

    url: str = Field("https://anonymised-node:8443/dicom-web", description="STOW-RS base URL")
    ca_bundle: Path | None = Field(
        None, description="CA bundle the peer's certificate is checked with"
    )
    token_file: Path | None = Field(None, description="file holding the bearer token")
    key_file: Path | None = Field(
        None,
        description="the forwarding key both nodes hold: each instance and manifest is signed"
        " with it (the anonymised node refuses what is not); none: unsigned",
    )
    allow_plain_http: bool = Field(False, description="permit an http:// URL (tests only)")
    manifest_url: str | None = Field(None, description="URL the study manifest is POSTed to")
    batch_size: int = Field(20, ge=1, description="instances per STOW-RS request")
    concurrency: int = Field(2, ge=1, description="STOW-RS requests in flight at once")
    timeout_s: float = Field(60.0, gt=0, description="per-request timeout")
    max_attempts: int = Field(8, ge=1, description="attempts before a study waits for staff")
    backoff_s: float = Field(2.0, ge=0, description="first retry delay; doubles each time")
    status_url: str | None = Field(
        None,
        description="the anonymised node's study status URL, `{study_uid}` standing for the"
        " de-identified Study Instance UID: a forwarded study is confirmed once it holds every"
        " announced instance; none: forwarded is the last state",
    )
    confirm_attempts: int = Field(
        12, ge=1, description="status checks of a forwarded study before the node stops asking"
    )
    confirm_backoff_s: float = Field(
        5.0, ge=0, description="first delay between status checks; doubles, at most 10 min"
    )

    @field_validator("status_url")
    @classmethod
    def _status_template(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and "{study_uid}" not in v:
            raise ValueError("the status URL must hold {study_uid}")
        plain = v is not None and v.startswith("http://")
        if v is not None and not v.startswith("https://") and not plain:
            raise ValueError("the status URL must start with https://")
        if plain and not info.data.get("allow_plain_http"):  # the bearer token goes with it
            raise ValueError("plain HTTP is refused (set allow_plain_http to permit)")
        return v

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if not v.startswith(("https://", "http://")):
            raise ValueError("the forward URL must start with https://")
        return v.rstrip("/")


class PacsSettings(_Section):
    """The PACS to query and retrieve from."""

    ae_title: str = Field("PACS", max_length=16, description="the PACS's AE title")
    host: str = Field("pacs", description="its host")
    port: int = Field(104, ge=1, le=65535, description="its port")
    concurrency: int = Field(4, ge=1, le=32, description="retrievals in flight during a bulk run")
    retrieve: Literal["move", "get"] = Field(
        "move", description="C-MOVE to our SCP, or C-GET on the same association"
    )


class WorkerSettings(_Section):
    """The pipeline workers."""

    lease_s: float = Field(300.0, gt=0, description="a claimed study is reclaimed after this long")
    idle_s: float = Field(1.0, gt=0, description="sleep when there is nothing to do")
    deid_processes: int = Field(
        0,
        ge=0,
        description="processes de-identifying a large study (0: one per CPU, at most 4)",
    )


class PagesSettings(WebSettings):
    """The staff pages (issue 16): the core's web settings plus this node's certificate."""

    tls_cert: Path | None = Field(
        None, description="PEM certificate the pages are served with over HTTPS"
    )
    tls_key: Path | None = Field(None, description="its private key (PEM)")


class Config(_Section):
    """The whole identifiable node configuration."""

    node: NodeSettings = Field(default_factory=NodeSettings, description="identity and state")
    folder: FolderSettings = Field(default_factory=FolderSettings, description="watched folder")
    scp: ScpSettings = Field(default_factory=ScpSettings, description="C-STORE receiver")
    study: StudySettings = Field(default_factory=StudySettings, description="study completion")
    optout: OptOutSettings = Field(default_factory=OptOutSettings, description="data opt-out")
    forward: ForwardSettings = Field(default_factory=ForwardSettings, description="forwarding")
    pacs: PacsSettings = Field(default_factory=PacsSettings, description="query/retrieve")
    workers: WorkerSettings = Field(default_factory=WorkerSettings, description="workers")
    web: PagesSettings = Field(default_factory=PagesSettings, description="staff pages")  # issue 16
    manual_ids: dict[str, Path] = Field(
        default_factory=dict,
        description="protocol ID -> CSV PatientID,SubjectID (manual trial IDs)",
    )
    links: list[str] = Field(
        default_factory=list,
        description="relays LISTEN=TARGET between loopback ports and socket files "
        "(a node with no network: docs/deployment.md)",
    )

    @field_validator("links")
    @classmethod
    def _links(cls, value: list[str]) -> list[str]:
        parse_routes(value)  # ValueError: the route and the forms allowed
        return value


def load_config(path: Path) -> Config:
    """Load and validate the node's YAML configuration.

    Raises:
        ConfigError: unreadable, not YAML, or invalid (the key and the problem are named).
    """
    return load_yaml_model(path, Config)
