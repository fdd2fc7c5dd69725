"""Benchmark: the review queue page with 1,000 studies in the store, as a signed-in reviewer.

(a) the baseline: the same server's bare ``/health`` endpoint (the HTTP floor of this stack);
(b) the queue page (``/``): sessions check, the queue queries, the template over 1,000 rows.
Same server, same run, over loopback HTTP (TLS costs both alike); server time per request.

Usage: python bench/review_queue.py [--studies 1000] [--requests 30]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests
import uvicorn

from anonymised_node.store import AnonStore
from anonymised_node.web.pages import build_site
from uploader.web.accounts import Accounts, Role
from uploader.web.site import Site

CLASSES = ["1.2.840.10008.5.1.4.1.1.2"] * 4 + ["1.2.840.10008.5.1.4.1.1.481.3"]


def fill(store: AnonStore, studies: int) -> None:
    for n in range(studies):
        uid = f"2.25.{n + 1}"
        sops = [f"{uid}.{k}" for k in range(len(CLASSES))]
        for sop, cls in zip(sops, CLASSES, strict=True):
            store.add_instance(
                study_uid=uid, sop_uid=sop, sop_class=cls, path=f"/nowhere/{sop}",
                protocol="PACE-C", subject=f"PACE-C-RXH-{n:06d}", session=f"S{n:06d}_CT01",
            )  # fmt: skip
        store.manifest(uid, {"instances": len(sops), "sop_instance_uids": sops})


def per_request_ms(s: requests.Session, url: str, n: int) -> float:
    s.get(url, timeout=60).raise_for_status()  # warm
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(n):
            s.get(url, timeout=60).raise_for_status()
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1000


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--studies", type=int, default=1000)
    p.add_argument("--requests", type=int, default=30)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "anonymised.sqlite"
        store = AnonStore(db)
        start = time.perf_counter()
        fill(store, args.studies)
        print(f"{args.studies} studies stored in {time.perf_counter() - start:.1f} s")
        accounts = Accounts(db)
        accounts.add("bench", Role.REVIEWER, "benchmark-password")
        site: Site = build_site(store, accounts, tls=False, cache_mb=8)
        server = uvicorn.Server(
            uvicorn.Config(site.app, host="127.0.0.1", port=0, log_level="warning")
        )
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        s = requests.Session()
        s.trust_env = False
        form = s.get(f"{base}/signin", timeout=10).text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
        s.post(f"{base}/signin", data={"csrf": csrf, "name": "bench",
                                        "password": "benchmark-password"}, timeout=30)  # fmt: skip
        page = s.get(f"{base}/", timeout=60)
        rows = page.text.count('class="study"')
        assert rows == args.studies, f"the queue shows {rows} studies"
        health = per_request_ms(s, f"{base}/health", args.requests)
        queue = per_request_ms(s, f"{base}/", args.requests)
        print(f"bare /health:               {health:7.2f} ms per request")
        print(f"queue page, {args.studies} studies: {queue:7.2f} ms per request "
              f"({len(page.content) // 1024} KiB)")  # fmt: skip
        print(f"ratio queue / health: {queue / health:.1f}")
        server.should_exit = True
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
