"""The staff pages' settings (the ``web`` section of a node's configuration)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class WebSettings(BaseModel):
    """Staff pages: their own port, HTTPS with the node's certificate, sessions, throttling."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: str = Field(
        "", description="HOST:PORT the staff pages listen on (empty: no pages are served)"
    )
    allow_plain_http: bool = Field(
        False, description="serve the pages without TLS (tests on loopback only)"
    )
    idle_timeout_min: float = Field(
        30.0, gt=0, description="a session unused this long is signed out (minutes)"
    )
    absolute_timeout_h: float = Field(
        12.0, gt=0, description="a session ends this long after sign-in, used or not (hours)"
    )
    throttle_failures: int = Field(
        5, ge=1, description="failed sign-ins per account, or per address, before throttling"
    )
    throttle_window_min: float = Field(
        15.0, gt=0, description="the window failed sign-ins are counted over (minutes)"
    )
    render_cache_mb: int = Field(64, ge=0, description="memory for rendered images (MB)")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        if value:
            host, sep, port = value.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
                raise ValueError(f"{value!r}: give HOST:PORT, e.g. 0.0.0.0:8444")
        return value

    def address(self) -> tuple[str, int]:
        """(host, port) of ``listen``."""
        host, _sep, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)
