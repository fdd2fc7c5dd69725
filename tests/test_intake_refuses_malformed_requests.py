"""Hostile requests at every endpoint of the anonymised node (the real process, HTTPS): malformed
JSON and multipart get 400 with a one-line reason, never a traceback; a body over the limit gets
413 while the node's memory stays bounded (its peak RSS is read from /proc)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from .intake_client import multipart, post_manifest, post_stow
from .peers import AnonNode, anon_config, anon_node

pytestmark = pytest.mark.integration
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def anon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnonNode]:
    tmp = tmp_path_factory.mktemp("malformed")
    config, _cert, _port = anon_config(
        tmp / "anon", {"type": "directory", "path": str(tmp / "out")}
    )
    settings = yaml.safe_load(config.read_text())
    settings["intake"].update(max_body_mb=64, max_instance_mb=16, max_json_kb=64)
    config.write_text(yaml.safe_dump(settings))
    with anon_node(config) as node:
        yield node


def _one_line_400(r: requests.Response, *words: str) -> None:
    assert r.status_code == 400, (r.status_code, r.text)
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in r.text
    for word in words:
        assert word in detail, detail


def _log(anon: AnonNode) -> str:
    return (anon.config.parent / "anon.log").read_text(errors="replace")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{", ["not valid JSON"]),
        (b"[1, 2]", ["JSON object", "array"]),
        (b'"text"', ["JSON object"]),
        (b"{\xc3\x28}", ["JSON"]),
        (b'{"study_uid": "1.2.3", "instances": "x"}', ["manifest"]),
        (b'{"study_uid": "../../x", "protocol": "PACE-C"}', ["study_uid"]),
    ],
)
def test_malformed_manifest_is_400_with_one_line(
    anon: AnonNode, body: bytes, words: list[str]
) -> None:
    _one_line_400(post_manifest(anon, body), *words)


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        ("/api/studies/abc/approve", b"{}", ["whole number"]),
        ("/api/studies/1/approve", b"{", ["not valid JSON"]),
        ("/api/studies/1/approve", b"[]", ["JSON object"]),
        ("/api/studies/1/reject", b'{"by": ["x"], "reason": 3}', ["strings"]),
        ("/api/studies/99999999999999999999999/approve", b"{}", ["whole number"]),
    ],
)
def test_malformed_review_decision_is_400_with_one_line(
    anon: AnonNode, path: str, body: bytes, words: list[str]
) -> None:
    r = requests.post(
        anon.url + path,
        data=body,
        headers={"Authorization": f"Bearer {anon.review_token}"},
        verify=str(anon.ca),
        timeout=10,
    )
    _one_line_400(r, *words)


def test_malformed_multipart_is_400_with_one_line_and_nothing_stored(anon: AnonNode) -> None:
    part = b"not dicom at all"
    body, content_type = multipart([part])
    wrong = content_type.replace("boundary=", "boundary=other")
    _one_line_400(post_stow(anon, body, wrong), "boundary")
    _one_line_400(post_stow(anon, body, 'multipart/related; type="application/dicom"'), "boundary")
    _one_line_400(post_stow(anon, body[: len(body) // 2], content_type), "closing boundary")
    _one_line_400(post_stow(anon, body.replace(b"\r\n\r\n", b"\r\n", 1), content_type), "header")
    empty, ctype = multipart([])
    _one_line_400(post_stow(anon, empty, ctype), "no instance")
    r = post_stow(anon, body, "application/json")
    assert r.status_code == 415 and "Traceback" not in r.text
    garbage = post_stow(anon, body, content_type)  # framed well, but not DICOM: refused per part
    assert garbage.status_code == 409
    (item,) = garbage.json()["00081198"]["Value"]
    assert item["00081197"]["Value"] == [0xC000]
    assert "incomplete DICOM" in item["00000902"]["Value"][0]
    received = anon.data / "received"
    assert not received.exists() or not any(p.is_file() for p in received.rglob("*"))
    assert "Traceback" not in _log(anon)


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc status")


def test_a_400_mib_body_is_refused_with_413_and_memory_stays_bounded(anon: AnonNode) -> None:
    before = _rss_mib(anon.proc.pid)
    chunk = os.urandom(MIB)
    boundary = "bigbody"

    def body() -> Iterator[bytes]:  # streamed (chunked): the client never holds it either
        yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        for _ in range(400):
            yield chunk

    ctype = f'multipart/related; type="application/dicom"; boundary={boundary}'
    r = post_stow(anon, body(), ctype)
    assert r.status_code == 413, r.text
    assert "intake.max_instance_mb" in r.json()["detail"]
    many_parts, _ = multipart([chunk * 8] * 10)  # 80 MiB of 8 MiB parts: the body limit
    r = post_stow(anon, many_parts, f"multipart/related; boundary={_boundary(many_parts)}")
    assert r.status_code == 413 and "intake.max_body_mb" in r.json()["detail"]
    declared = requests.post(  # a declared length over the limit: refused before it is read
        f"{anon.url}/manifests",
        data=b"{" + b" " * (100 * 1024) + b"}",
        headers={"Authorization": f"Bearer {anon.token}"},
        verify=str(anon.ca),
        timeout=30,
    )
    assert declared.status_code == 413
    peak = _peak_rss_mib(anon.proc.pid)
    assert peak - before < 120, f"peak RSS {peak:.0f} MiB, {before:.0f} MiB before"
    assert requests.get(f"{anon.url}/health", verify=str(anon.ca), timeout=10).ok
    assert "Traceback" not in _log(anon)


def _boundary(body: bytes) -> str:
    return body.split(b"\r\n", 1)[0][2:].decode()


def test_the_review_api_answers_json_not_tracebacks_for_unknown_studies(anon: AnonNode) -> None:
    r = requests.post(
        f"{anon.url}/api/studies/12345/approve",
        json={"by": "x"},
        headers={"Authorization": f"Bearer {anon.review_token}"},
        verify=str(anon.ca),
        timeout=10,
    )
    assert r.status_code == 404 and json.loads(r.text) == {"detail": "no such study"}
