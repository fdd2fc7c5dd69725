"""Write the image tag's version into the shipped `.env` from the package's one version.

Compose reads `.env` beside compose.yaml; compose.yaml tags both images
``secure-dicom-uploader/<node>-node:${UPLOADER_VERSION}``. The version is the installed
distribution's (importlib.metadata, from pyproject.toml), so the tag follows every release;
other lines of `.env` (a site's port settings) are kept as they are.

Usage: python tools/gen_env.py [--check]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / ".env"
KEY = "UPLOADER_VERSION"
HEADER = (
    "# Read by Docker Compose beside compose.yaml. UPLOADER_VERSION is the images' tag, written\n"
    "# by tools/gen_env.py from the package version (./dev lint checks it): do not edit it.\n"
    "# Your own settings (UPLOADER_DICOM_PORT, UPLOADER_REVIEW_PORT, UPLOADER_PAGES_PORT)\n"
    "# go below.\n"
)


def build(current: str, version: str) -> str:
    """``current`` with its version line set to ``version`` (the header added if missing)."""
    lines = [line for line in current.splitlines() if not line.startswith(f"{KEY}=")]
    body = [line for line in lines if line not in HEADER.splitlines()]
    return HEADER + f"{KEY}={version}\n" + "".join(f"{line}\n" for line in body)


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from uploader.version import __version__

    current = OUT.read_text(encoding="utf-8") if OUT.exists() else ""
    wanted = build(current, __version__)
    if "--check" in sys.argv[1:]:
        if current != wanted:
            print(f"{OUT.name} is out of date: run python tools/gen_env.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
