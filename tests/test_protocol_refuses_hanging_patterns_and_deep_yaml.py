"""A protocol written to hang or crash the node: a catastrophically backtracking pattern matched
against a long ROI name, patterns RE2 cannot run without backtracking, YAML nested 5000 deep,
aliases that stand for billions of nodes, a 60 MB file. Each is either refused by
``uploader protocol check`` with one line naming the file and the line, or runs in a time the
test measures."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from uploader.protocols.loader import load_protocol
from uploader.protocols.study import load_study
from uploader.protocols.validate import validate_study
from uploader.sample import write_study

from .conftest import run_cli

EVIL = r"^(a+)+$"  # exponential in Python's re against "aaaa...!"

PROTOCOL = f"""\
id: EVIL-1
name: a protocol with a pathological pattern
modalities: {{required: [CT, RTSTRUCT]}}
structures:
  naming: none
  required:
    - {{pattern: "{EVIL}"}}
  forbidden: ["/(x+x+)+y/"]
rules:
  - {{attribute: SeriesDescription, matches: "(.*a){{20}}", severity: warn}}
"""

pytestmark = pytest.mark.integration  # every test runs the `uploader` command


@pytest.mark.filterwarnings("ignore:The value length")
def test_a_backtracking_pattern_against_a_long_roi_name_finishes_quickly(tmp_path: Path) -> None:
    long_name = "a" * 5000 + "!"
    started = time.perf_counter()
    assert re.search(EVIL, "a" * 22 + "!") is None  # Python's own re: already slow at 22
    python_re = time.perf_counter() - started
    path = tmp_path / "evil.yaml"
    path.write_text(PROTOCOL)
    check = run_cli("protocol", "check", path)
    assert check.returncode == 0, check.stdout + check.stderr  # RE2 runs it in linear time
    study = tmp_path / "study"
    write_study(study, slices=2, rois=[long_name, "x" * 5000])
    protocol, loaded = load_protocol(path), load_study(study)
    started = time.perf_counter()
    report = validate_study(protocol, loaded)
    took = time.perf_counter() - started
    assert took < 2.0, f"validation took {took:.1f} s"
    assert took < python_re * 50  # what re would take for 5000 characters is beyond any bound
    assert not report.passed  # the pattern does not match the long name
    started = time.perf_counter()
    result = run_cli("protocol", "validate", path, study)
    assert time.perf_counter() - started < 30
    assert result.returncode == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("pattern", "why"),
    [(r"^(\\w+)\\1$", "invalid escape sequence"), (r"^(?=PTV).*$", "invalid perl operator")],
)
def test_patterns_that_need_backtracking_are_refused_by_check(
    tmp_path: Path, pattern: str, why: str
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(PROTOCOL.replace(EVIL, pattern))
    result = run_cli("protocol", "check", path)
    assert result.returncode == 1
    line = next(x for x in result.stdout.splitlines() if "pattern" in x)
    assert line.startswith(f"{path}:7: structures.required.0.pattern: not an accepted regular")
    assert why in line and "RE2" in line
    assert result.stderr == ""  # RE2 logs nothing of its own


def test_a_very_long_pattern_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(PROTOCOL.replace(EVIL, "a" * 2000))
    result = run_cli("protocol", "check", path)
    assert result.returncode == 1 and "a pattern is at most 1000 characters" in result.stdout


def test_yaml_nested_5000_deep_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("id: DEEP\nname: x\nmodalities: " + "[" * 5000 + "]" * 5000 + "\n")
    result = run_cli("protocol", "check", path)
    assert result.returncode == 2
    assert result.stderr == f"uploader: {path}:3: nested more than 32 levels deep: " + (
        "a protocol is a few levels of keys and lists\n"
    )
    path.write_text("id: DEEP\nextra: " + "{k: " * 5000 + "v" + "}" * 5000 + "\n")
    result = run_cli("protocol", "check", path)
    assert result.returncode == 2 and "nested more than 32 levels" in result.stderr
    assert "RecursionError" not in result.stderr and "Traceback" not in result.stderr


def test_aliases_are_refused(tmp_path: Path) -> None:
    laughs = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        laughs.append(f"{cur}: &{cur} [{', '.join([f'*{prev}'] * 9)}]")
    path = tmp_path / "laughs.yaml"
    path.write_text("id: LOL\nname: x\nextra:\n" + "".join(f"  {x}\n" for x in laughs))
    started = time.perf_counter()
    result = run_cli("protocol", "check", path)
    assert time.perf_counter() - started < 30
    assert result.returncode == 2
    assert result.stderr.startswith(f"uploader: {path}:5: YAML aliases (*a) are not accepted")


def test_a_60_mb_protocol_is_refused_at_once(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("w") as f:
        f.write("id: HUGE\nname: x\nstructures:\n  required:\n")
        line = "    - {name: Prostate, synonyms: [a, b, c, d, e, f, g, h, i, j, k, l]}\n"
        f.write(line * (60_000_000 // len(line)))
    started = time.perf_counter()
    result = run_cli("protocol", "check", path)
    assert time.perf_counter() - started < 10
    assert result.returncode == 2
    assert result.stderr == f"uploader: {path}: too large for a protocol (at most 1024 kB)\n"
