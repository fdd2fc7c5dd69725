"""An anonymised node with its staff pages on, accounts made, and a signed-in HTTP client."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

from uploader.web.accounts import Accounts, Role

from .peers import AnonNode, anon_config, anon_node, free_port

PASSWORDS = {"rita": "reviewer-password-1", "adam": "admin-password-12"}


@dataclass
class WebNode:
    anon: AnonNode
    web: str  # https://127.0.0.1:port
    ca: Path
    port: int  # the intake's

    def client(self) -> requests.Session:
        """A browser-like HTTP client that trusts the node's certificate only."""
        s = requests.Session()
        s.trust_env = False  # requests would otherwise prefer the environment's CA bundle
        s.verify = str(self.ca)
        return s

    def sign_in(self, name: str, password: str | None = None) -> requests.Session:
        s = self.client()
        form = s.get(f"{self.web}/signin", timeout=10)
        csrf = csrf_of(form.text)
        done = s.post(
            f"{self.web}/signin",
            data={"csrf": csrf, "name": name, "password": password or PASSWORDS[name]},
            timeout=30,
        )
        assert done.status_code == 200 and "Sign out" in done.text, done.text[:500]
        return s


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field in the page"
    return found.group(1)


@contextmanager
def web_node(tmp: Path, target: dict[str, Any], **web: Any) -> Iterator[WebNode]:
    """The anonymised node with pages on a free port, accounts rita (reviewer), adam (admin)."""
    config, cert, port = anon_config(tmp, target)
    settings = yaml.safe_load(config.read_text())
    web_port = free_port()
    settings["web"] = {"listen": f"127.0.0.1:{web_port}", **web}
    config.write_text(yaml.safe_dump(settings))
    accounts = Accounts(Path(settings["node"]["data_dir"]) / "anonymised.sqlite")
    accounts.add("rita", Role.REVIEWER, PASSWORDS["rita"])
    accounts.add("adam", Role.ADMIN, PASSWORDS["adam"])
    with anon_node(config) as anon:
        yield WebNode(anon, f"https://127.0.0.1:{web_port}", cert, port)
