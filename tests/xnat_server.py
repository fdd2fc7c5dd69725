"""A small HTTPS server that implements exactly the XNAT endpoints the uploader uses, as XNAT
documents them, and records every call: the wire contract the XNAT target must keep.
(No XNAT server can run here; this is the only mock in the suite.)"""

from __future__ import annotations

import base64
import io
import json
import ssl
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse


@dataclass
class XnatState:
    user: str
    password: str
    sessions: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)  # files
    shares: list[tuple[str, ...]] = field(default_factory=list)
    calls: list[tuple[str, str, dict[str, list[str]]]] = field(default_factory=list)
    fail_imports: int = 0  # answer 503 to this many imports first


def _handler(state: XnatState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _authorised(self) -> bool:
            want = base64.b64encode(f"{state.user}:{state.password}".encode()).decode()
            if self.headers.get("Authorization") != f"Basic {want}":
                self._send(401, "Unauthorized")
                return False
            return True

        def _send(self, code: int, body: str, ctype: str = "text/plain") -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self, method: str) -> None:
            url = urlparse(self.path)
            query = parse_qs(url.query)
            state.calls.append((method, url.path, query))
            if not self._authorised():
                return
            parts = url.path.strip("/").split("/")
            if method == "POST" and url.path == "/data/services/import":
                self._import(query)
            elif method == "PUT" and len(parts) == 7 and parts[5] == "projects":
                label = query.get("label", [""])[0]
                state.shares.append(("subject", parts[2], parts[4], parts[6], label))
                self._send(200, "")
            elif method == "PUT" and len(parts) == 9 and parts[7] == "projects":
                label = query.get("label", [""])[0]
                state.shares.append(("session", parts[2], parts[4], parts[6], parts[8], label))
                self._send(200, "")
            elif method == "GET" and len(parts) == 10 and parts[7:] == ["scans", "ALL", "files"]:
                files = state.sessions.get((parts[2], parts[4], parts[6]))
                if files is None:
                    self._send(404, "not found")
                    return
                rows = [{"Name": name, "URI": f"/data/files/{name}"} for name in files]
                self._send(200, json.dumps({"ResultSet": {"Result": rows}}), "application/json")
            else:
                self._send(404, "not found")

        def _import(self, query: dict[str, list[str]]) -> None:
            need = {"import-handler": "DICOM-zip", "overwrite": "append", "dest": "/archive"}
            if (
                any(query.get(k, [""])[0] != v for k, v in need.items())
                or self.headers.get("Content-Type") != "application/zip"
            ):
                self._send(400, "bad import request")
                return
            if state.fail_imports > 0:
                state.fail_imports -= 1
                self._send(503, "busy")
                return
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            names = zipfile.ZipFile(io.BytesIO(body)).namelist()
            key = (query["PROJECT_ID"][0], query["SUBJECT_ID"][0], query["EXPT_LABEL"][0])
            files = state.sessions.setdefault(key, [])
            files += [
                f"renamed-{len(files) + i}.dcm" for i, _n in enumerate(names)
            ]  # XNAT renames files
            self._send(
                200, f"/data/archive/projects/{key[0]}/subjects/{key[1]}/experiments/{key[2]}"
            )

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_PUT(self) -> None:
            self._route("PUT")

    return Handler


class XnatServer:
    def __init__(self, cert: Path, key: Path, state: XnatState) -> None:
        self.state = state
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> XnatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
