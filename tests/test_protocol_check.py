"""`uploader protocol check`: every problem as FILE:LINE: message; TG-263 conventions."""

from __future__ import annotations

from pathlib import Path

import pytest

from uploader.protocols.nomenclature import check_name, primary_names, suggest, table

from .conftest import run_cli

BAD = """\
id: T1
modalities:
  required: [CT, RTSTRUCT]
  forbidden: [CT]
structures:
  required:
    - name: Prostate
      synonyms: [Prost]
    - name: Rectum
      synonyms: [Prost]
    - name: Prostate
    - pattern: "^PTV(["
  colour: red
rules:
  - {attribute: SliceThickness, min: 5, max: 3}
"""


@pytest.mark.integration
def test_check_reports_each_problem_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "trial.yaml"
    path.write_text(BAD)
    result = run_cli("protocol", "check", path)
    assert result.returncode == 1
    out = result.stdout
    assert f"{path}:12: structures.required.3.pattern" in out and "regular expression" in out
    assert f"{path}:13: structures.colour: unknown key" in out
    fixed = BAD.replace('    - pattern: "^PTV(["\n', "").replace("  colour: red\n", "")
    path.write_text(fixed)
    out = run_cli("protocol", "check", path).stdout
    assert f"{path}:4: CT is both expected and forbidden" in out
    assert f"{path}:10: synonym 'Prost' is claimed by 'Prostate' too" in out
    assert f"{path}:11: structure 'Prostate' is listed twice" in out
    assert f"{path}:13: SliceThickness: min is above max" in out
    assert "Traceback" not in out


@pytest.mark.integration
@pytest.mark.parametrize("text", ["id: [unclosed\n", "id: X\n\tbad: tab\n"])
def test_malformed_yaml_is_one_line_with_the_line_number(tmp_path: Path, text: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    result = run_cli("protocol", "check", path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"uploader: {path}:") and "not valid YAML" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_tg263_list_is_packaged_with_its_source_and_version() -> None:
    data = table()
    assert data["version"] and data["source"]
    assert len(primary_names()) > 500
    assert {
        "Bladder",
        "Rectum",
        "Prostate",
        "Parotid_L",
        "SpinalCord",
        "Brainstem",
    } <= primary_names()


@pytest.mark.parametrize(
    "name",
    [
        "Parotid_L",
        "PTV_4000",
        "PTV",
        "CTVn1",
        "GTVp",
        "PTVp1_7000",
        "SpinalCord_PRV05",
        "Brainstem_PRV",
        "Brain~",
        "Lung_L^Ipsi",
        "zPTV_opt",
    ],
)
def test_tg263_conventions_accept(name: str) -> None:
    assert check_name(name) is None


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("Left Parotid", "not a TG-263"),
        ("Parotid_Left_Superficial", "longer than 16"),
        ("PTVx y", "not"),
    ],
)
def test_tg263_conventions_reject(name: str, reason: str) -> None:
    result = check_name(name)
    assert result is not None and reason in result


def test_suggestions_know_laterality_and_typos() -> None:
    assert suggest("Left Parotid")[0] == "Parotid_L"
    assert suggest("Rt Parotid")[0] == "Parotid_R"
    assert "Rectum" in suggest("Rectm")
    assert suggest("prostate", extra=("Prostate",))[0] == "Prostate"
