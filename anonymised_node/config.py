"""The anonymised node's configuration: one YAML file, validated, secrets read from files.

docs/anonymised-node.md lists every setting with its default (a test checks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from uploader.node.config import load_yaml_model
from uploader.web.settings import WebSettings


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeSettings(_Section):
    """Where the node keeps its state."""

    data_dir: Path = Field(Path("/data"), description="store, received instances, audit")
    protocols_dir: Path = Field(
        Path("/etc/uploader/protocols"), description="trial protocols (*.yaml)"
    )
    site_patterns: Path | None = Field(
        None,
        description="the sites' extra pattern table (JSON or YAML, the packaged table's shape): "
        "the intake refuses kept text holding one of its audit rows",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")


class IntakeSettings(_Section):
    """The STOW-RS intake the identifiable node forwards to."""

    host: str = Field("0.0.0.0", description="address to listen on")  # noqa: S104 - a container port
    port: int = Field(8443, ge=0, le=65535, description="port to listen on")
    tls_cert: Path | None = Field(None, description="server certificate (PEM)")
    tls_key: Path | None = Field(None, description="server private key (PEM)")
    token_file: Path = Field(
        Path("/run/secrets/intake_token"), description="the forwarders' bearer token"
    )
    review_token_file: Path | None = Field(
        None, description="bearer token for the review API (staff)"
    )
    forward_key_file: Path = Field(
        Path("/run/secrets/forward_key"),
        description="the forwarding key both nodes hold: instances and manifests must carry"
        " its signature",
    )
    max_body_mb: int = Field(2048, ge=1, description="largest STOW-RS request body (413 beyond)")
    max_instance_mb: int = Field(
        1024, ge=1, description="largest single instance in a request (413 beyond)"
    )
    max_json_kb: int = Field(
        4096, ge=1, description="largest JSON body (manifest, review decision; 413 beyond)"
    )
    allow_plain_http: bool = Field(
        False, description="serve without TLS (tests and the local demo only)"
    )

    @model_validator(mode="after")
    def _tls(self) -> IntakeSettings:
        if not self.allow_plain_http and (self.tls_cert is None or self.tls_key is None):
            raise ValueError("tls_cert and tls_key are required (or allow_plain_http: true)")
        return self


class Target(_Section):
    """A remote repository."""

    type: Literal["dicomweb", "xnat", "directory"] = Field(description="how to push")
    url: str = Field("", description="DICOMweb base URL, or XNAT base URL")
    path: Path | None = Field(None, description="directory target: where studies are written")
    ca_bundle: Path | None = Field(
        None, description="CA bundle the repository's certificate is checked with"
    )
    auth: Literal["none", "basic", "bearer"] = Field("none", description="how to authenticate")
    username: str = Field("", description="basic auth / XNAT user")
    password_file: Path | None = Field(None, description="file holding the password (basic / XNAT)")
    token_file: Path | None = Field(None, description="file holding the bearer token")
    project: str = Field("", description="XNAT: the site's project the session is imported into")
    share_to_trial: bool = Field(
        True,
        description="XNAT: share subject and session into the trial's project (its protocol ID)",
    )
    batch_size: int = Field(20, ge=1, description="instances per STOW-RS request")
    timeout_s: float = Field(120.0, gt=0, description="per-request timeout")
    allow_plain_http: bool = Field(False, description="permit an http:// URL (tests only)")

    @model_validator(mode="after")
    def _complete(self) -> Target:
        if self.type == "xnat" and not self.project:
            raise ValueError("an xnat target needs `project` (the site's project)")
        if self.type == "directory" and self.path is None:
            raise ValueError("a directory target needs `path`")
        if self.type != "directory" and not self.url:
            raise ValueError(f"a {self.type} target needs `url`")
        if self.url.startswith("http://") and not self.allow_plain_http:
            raise ValueError("plain HTTP is refused: use https:// (or allow_plain_http: true)")
        return self


class PushSettings(_Section):
    """Pushing approved studies."""

    max_attempts: int = Field(10, ge=1, description="attempts before a study is marked failed")
    backoff_s: float = Field(2.0, ge=0, description="first retry delay; doubles, with jitter")
    confirm: bool = Field(True, description="confirm arrival (QIDO-RS / listing) before `uploaded`")


class RetentionSettings(_Section):
    """How long local copies stay."""

    delete_after_days: float = Field(30.0, ge=0, description="days after confirmed upload")


class WorkerSettings(_Section):
    """The push worker."""

    lease_s: float = Field(600.0, gt=0, description="a claimed study is reclaimed after this long")
    idle_s: float = Field(1.0, gt=0, description="sleep when there is nothing to do")


class Config(_Section):
    """The whole anonymised node configuration."""

    node: NodeSettings = Field(default_factory=NodeSettings, description="state")
    intake: IntakeSettings = Field(
        default_factory=lambda: IntakeSettings(allow_plain_http=True), description="intake"
    )
    targets: dict[str, Target] = Field(
        default_factory=lambda: {"local": Target(type="directory", path=Path("/data/outgoing"))},
        description="repositories by name",
    )
    default_target: str = Field("local", description="target for trials not in trial_targets")
    trial_targets: dict[str, str] = Field(
        default_factory=dict, description="protocol ID -> target name"
    )
    push: PushSettings = Field(default_factory=PushSettings, description="pushing")
    retention: RetentionSettings = Field(default_factory=RetentionSettings, description="retention")
    workers: WorkerSettings = Field(default_factory=WorkerSettings, description="workers")
    web: WebSettings = Field(default_factory=WebSettings, description="staff pages")  # issue 15

    @model_validator(mode="after")
    def _targets_exist(self) -> Config:
        for name in [self.default_target, *self.trial_targets.values()]:
            if name not in self.targets:
                raise ValueError(f"target {name!r} is not defined under `targets`")
        return self


def load_config(path: Path) -> Config:
    """Load and validate the anonymised node's configuration (errors name the key)."""
    return load_yaml_model(path, Config)
