"""Container healthcheck: exit 0 only when the node runs and every watched part of it is well.

Reads the health file the node writes every few seconds (``health.json`` in its data folder,
see uploader/health.py): a part that stopped or keeps failing, or a file that is missing or
stale, is unhealthy, and the reason is printed (``docker inspect`` shows it). With
UPLOADER_HEALTH_URL set (the anonymised node) its /health endpoint must answer too.
"""

import json
import os
import ssl
import sys
import urllib.request
from pathlib import Path

from uploader.health import read_health


def main() -> int:
    data_dir = Path(os.environ.get("UPLOADER_DATA", "/data"))
    problems = read_health(data_dir)
    if problems is None:
        print("not running (no health file yet)")
        return 1
    url = os.environ.get("UPLOADER_HEALTH_URL")
    if url:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # a liveness probe of our own port inside the container
        try:
            with urllib.request.urlopen(url, timeout=5, context=ctx) as r:  # noqa: S310 - fixed URL
                if json.load(r).get("status") != "ok":
                    problems.append(f"{url} does not say ok")
        except (OSError, ValueError) as exc:
            problems.append(f"{url}: {type(exc).__name__}")
    for problem in problems:
        print(problem)
    if not problems:
        print("healthy")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
