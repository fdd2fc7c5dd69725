"""Protocol loading gives one clear line per problem; the docs list every option."""

from __future__ import annotations

from pathlib import Path

import pytest

from uploader.deid.policy import BURNED_IN_KINDS
from uploader.deid.profile import Option
from uploader.errors import ConfigError
from uploader.protocols.loader import load_protocol

from .conftest import EXAMPLE_PROTOCOL, ROOT


def test_example_protocol_loads() -> None:
    protocol = load_protocol(EXAMPLE_PROTOCOL)
    assert protocol.id == "PACE-C"
    assert Option.CLEAN_DESCRIPTORS in protocol.deidentify.options
    assert [t.key().element for t in protocol.deidentify.keep_private] == [0x00, 0x09]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("id: X\n  bad: [\n", ":2:"),  # YAML syntax: the line is named
        ("- just a list\n", "a YAML mapping"),
        ("name: no id\n", "id: Field required"),
        ("id: X\ndeidentify:\n  optoins: []\n", ":3: deidentify.optoins: unknown key"),
        ("id: X\npseudonym:\n  subject: '{mrn}'\n", "unknown {mrn}"),
        ("id: X\npseudonym:\n  subject: 'FIXED'\n", "needs a {hash:N}"),
        ("id: X\ndeidentify:\n  keep_private: [{tag: '(0008,xx10)', creator: A}]\n", "odd group"),
    ],
)
def test_bad_protocols_are_named_with_the_problem(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "trial.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_protocol(path)
    message = str(info.value)
    assert message.startswith(str(path)) and expected in message


def test_docs_list_every_option_and_burned_in_kind() -> None:
    text = (ROOT / "docs" / "deidentification.md").read_text()
    for name in [*(o.value for o in Option), *BURNED_IN_KINDS]:
        assert f"`{name}`" in text or name in text, name


def _fields(schema: dict, seen: set[str] | None = None) -> set[str]:
    out: set[str] = set()
    for part in (schema, *schema.get("$defs", {}).values()):
        out.update(part.get("properties", {}))
    return out


def test_docs_explain_every_protocol_schema_field() -> None:
    from uploader.protocols.model import Protocol

    text = (ROOT / "docs" / "protocols.md").read_text()
    fields = _fields(Protocol.model_json_schema())
    assert len(fields) > 30
    missing = sorted(f for f in fields if f"`{f}`" not in text)
    assert missing == []
