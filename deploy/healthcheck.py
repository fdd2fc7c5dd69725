"""Container healthcheck: exit 0 when the node is up (its ready file exists, or /health answers)."""

import json
import os
import sys
import urllib.request
from pathlib import Path

ready = Path(os.environ.get("UPLOADER_DATA", "/data")) / "node.ready"
url = os.environ.get("UPLOADER_HEALTH_URL")
try:
    if url:
        import ssl

        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # a liveness probe of our own port inside the container
        with urllib.request.urlopen(url, timeout=5, context=ctx) as r:  # noqa: S310 - fixed URL
            sys.exit(0 if json.load(r).get("status") == "ok" else 1)
    sys.exit(0 if ready.exists() else 1)
except Exception:
    sys.exit(1)
