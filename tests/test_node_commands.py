"""Each node registers its own commands (entry-point group ``uploader.commands``): ``uploader
NODE VERB`` names the node; the short ``uploader VERB --config F`` goes to the node F is for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uploader.node.commands import registered

from .conftest import run_cli

pytestmark = pytest.mark.integration  # runs the real console script, a process per call


def _configs(tmp_path: Path) -> tuple[Path, Path, Path]:
    ident, anon, either = tmp_path / "i.yaml", tmp_path / "a.yaml", tmp_path / "n.yaml"
    ident.write_text(f"node: {{data_dir: {tmp_path / 'i'}}}\nscp: {{port: 0}}\n")
    anon.write_text(f"node: {{data_dir: {tmp_path / 'a'}}}\nintake: {{allow_plain_http: true}}\n")
    either.write_text(f"node: {{data_dir: {tmp_path / 'n'}}}\n")
    return ident, anon, either


def test_both_nodes_are_registered_and_listed() -> None:
    nodes = {n.name: n for n in registered()}
    assert set(nodes) == {"identifiable", "anonymised"}
    assert {v.name for v in nodes["identifiable"].verbs} >= {"run", "status", "qr", "link", "users"}
    assert "qr" not in {v.name for v in nodes["anonymised"].verbs}
    shown = run_cli("--help").stdout
    assert "identifiable" in shown and "anonymised" in shown and "status" in shown


def test_a_verb_goes_to_the_node_its_configuration_is_for(tmp_path: Path) -> None:
    ident, anon, _ = _configs(tmp_path)
    named = run_cli("identifiable", "status", "--config", ident, "--json")
    short = run_cli("status", "--config", ident, "--json")
    assert named.returncode == short.returncode == 0, named.stderr + short.stderr
    assert json.loads(named.stdout) == json.loads(short.stdout)
    assert "opted_out" in json.loads(short.stdout)["counts"]  # the identifiable node's states
    short = run_cli("status", "--json", "--config", anon)
    assert short.returncode == 0 and "refusals" in json.loads(short.stdout), short.stderr
    named = run_cli("anonymised", "status", "--config", anon)
    assert named.returncode == 0 and "refused_instances" in named.stdout


def test_a_configuration_that_does_not_tell_its_node_asks_for_the_node(tmp_path: Path) -> None:
    ident, anon, either = _configs(tmp_path)
    result = run_cli("review", "list", "--config", either)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert str(either) in result.stderr and "uploader identifiable review" in result.stderr
    assert run_cli("identifiable", "review", "list", "--config", either).returncode == 0
    wrong = run_cli("identifiable", "status", "--config", anon)  # the named node judges the file
    assert wrong.returncode == 2 and "intake: unknown setting" in wrong.stderr
    mixed = tmp_path / "mixed.yaml"
    mixed.write_text(ident.read_text() + anon.read_text().split("\n", 1)[1])
    assert "cannot tell which node" in run_cli("status", "--config", mixed).stderr
    assert run_cli("anonymised", "qr", "find", "--config", anon).returncode == 2  # not its verb
    missing = run_cli("status", "--config", tmp_path / "none.yaml")
    assert missing.returncode == 2 and "cannot read the configuration" in missing.stderr
