"""The node's configuration: the example loads, errors name the key, the docs list every setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from identifiable_node.config import Config, load_config
from uploader.errors import ConfigError
from uploader.node.config import read_secret

from .conftest import ROOT


def _paths(model: type, prefix: str = "") -> list[str]:
    out = []
    for name, f in model.model_fields.items():  # type: ignore[attr-defined]
        sub = f.annotation
        if isinstance(sub, type) and hasattr(sub, "model_fields"):
            out += _paths(sub, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


def test_example_config_loads() -> None:
    config = load_config(ROOT / "identifiable_node" / "example-config.yaml")
    assert config.scp.ae_title == "UPLOADER" and config.forward.url.startswith("https://")


def test_docs_list_every_setting_with_its_default() -> None:
    text = (ROOT / "docs" / "identifiable-node.md").read_text()
    paths = _paths(Config)
    assert len(paths) > 35
    assert [p for p in paths if f"| `{p}` |" not in text] == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("scp:\n  port: 99999\n", "scp.port: Input should be less than or equal to 65535"),
        ("forward:\n  url: ftp://x\n", "forward.url: the forward URL must start with https://"),
        ("study:\n  quiet: 5\n", "study.quiet: unknown setting"),
        ("scp: [\n", ":2: not valid YAML"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(str(path)) and expected in str(info.value)


def test_secrets_never_appear_in_errors(tmp_path: Path) -> None:
    empty = tmp_path / "token"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        read_secret(empty, "forward token")
    secret = tmp_path / "ok"
    secret.write_text("s3cr3t-value\n")
    assert read_secret(secret, "forward token") == "s3cr3t-value"


def test_anonymised_example_config_loads_and_docs_list_every_setting() -> None:
    from anonymised_node.config import Config as AnonConfig
    from anonymised_node.config import Target
    from anonymised_node.config import load_config as load_anon

    config = load_anon(ROOT / "anonymised_node" / "example-config.yaml")
    assert config.targets["trial-repository"].type == "dicomweb"
    text = (ROOT / "docs" / "anonymised-node.md").read_text()
    paths = _paths(AnonConfig) + [f"targets.<name>.{p}" for p in _paths(Target)]
    assert [p for p in paths if f"| `{p}` |" not in text] == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("intake: {port: 8443}\n", "tls_cert and tls_key are required"),
        (
            "targets: {r: {type: dicomweb, url: 'http://x'}}\ndefault_target: r\n",
            "plain HTTP is refused",
        ),
        (
            "targets: {r: {type: directory, path: /tmp/x}}\ndefault_target: nope\n",
            "target 'nope' is not defined",
        ),
    ],
)
def test_anonymised_bad_settings_are_named(tmp_path: Path, text: str, expected: str) -> None:
    from anonymised_node.config import load_config as load_anon

    path = tmp_path / "anon.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_anon(path)
