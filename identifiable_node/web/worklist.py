"""The worklist: every study by state with its reason, patient, trial and live progress."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from identifiable_node.store import STATES, Store
from identifiable_node.trials import Trials
from identifiable_node.web import patients
from uploader.web.accounts import Session
from uploader.web.site import Site

LABEL = {
    "receiving": "receiving",
    "complete": "received",
    "opted_out": "opted out",
    "needs_review": "waiting for review",
    "validated": "validated",
    "pseudonymised": "de-identified",
    "forwarded": "forwarded",
    "quarantined": "quarantined",
    "rejected": "rejected",
    "confirmed": "confirmed by the anonymised node",
    "refused_downstream": "rejected by the anonymised node",
}


def add(site: Site, store: Store, trials: Trials) -> None:
    """The worklist page and its rows (polled every 2 s)."""

    def chosen(request: Request) -> dict[str, str]:
        q = request.query_params
        state = q.get("state", "")
        return {
            "state": state if state in STATES else "",
            "trial": q.get("trial", "")[:64],
            "q": q.get("q", "").strip()[:64],
        }

    def rows(request: Request) -> tuple[dict[str, str], list[object]]:
        patients.fill(store)
        c = chosen(request)
        return c, list(store.worklist(c["state"], c["trial"], c["q"]))

    @site.page("/")
    def home(request: Request, session: Session) -> Response:
        c, found = rows(request)
        trial_names = sorted({*trials.protocols, *store.trials_in_use()})
        return site.render(
            "worklist.html", session, rows=found, chosen=c, states=STATES, labels=LABEL,
            trials=trial_names, query=request.url.query,
        )  # fmt: skip

    @site.page("/worklist/rows")
    def fragment(request: Request, session: Session) -> Response:
        _c, found = rows(request)
        return site.render(
            "worklist_rows.html", session, rows=found, labels=LABEL, query=request.url.query
        )
