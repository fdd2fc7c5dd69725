"""Query/retrieve from the configured PACS, and bulk CSV retrievals, from the pages.

A C-FIND form (patient ID, accession, date range, modality) lists the PACS's studies; the
chosen ones are retrieved into a trial as a bulk job of one row each. A pasted or uploaded bulk
CSV (the DQR columns plus Trial) is the same kind of job. Jobs are ``identifiable_node.bulk``'s:
their rows and progress are in the store, so a restart shows them as they were and the node
takes up the rows not yet done. Each job runs in its own background thread.
"""

from __future__ import annotations

import csv
import io
import logging
import secrets
import threading
from collections.abc import Collection

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from identifiable_node.bulk import Bulk
from identifiable_node.config import Config
from identifiable_node.ingest import Ingestor
from identifiable_node.trials import Trials
from uploader.dicomnet.qr import Match, Peer, find, study_query
from uploader.errors import ConfigError, RetriableError
from uploader.web.accounts import Session
from uploader.web.site import Site

log = logging.getLogger(__name__)
QUERY = ("patient_id", "accession", "date_from", "date_to", "modality")
#: A pasted or uploaded bulk CSV, as sent (URL-encoded): room for some 100,000 rows.
MAX_BULK_FORM = 8 * 1024 * 1024
HEADER = ["Accession Number", "Patient ID", "Study Date", "Modality", "Trial"]


class Retrievals:
    """Bulk jobs running in the background (one thread per job)."""

    def __init__(self, config: Config, ingestor: Ingestor, trials: Collection[str]) -> None:
        pacs = config.pacs
        self.peer = Peer(pacs.ae_title, pacs.host, pacs.port, config.scp.ae_title)
        self.store, self.tmp = ingestor.store, config.node.data_dir / "tmp"
        take = None
        if pacs.retrieve == "get":

            def take(data: bytes, trial: str | None = None) -> None:
                ingestor.take_bytes(data, source="qr:get", protocol=trial)

        destination = config.scp.ae_title
        self.bulk = Bulk(self.store, self.peer, destination, pacs.concurrency, take, trials=trials)
        self._running: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def load_text(self, text: str) -> str:
        """Record a bulk CSV given as text; return its job. The CSV names patients: it is
        written under the node's own state folder (owner only) and removed once read.

        Raises:
            ConfigError: the CSV's problem, named by its line.
        """
        self.tmp.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.tmp / f"bulk-{secrets.token_hex(8)}.csv"
        try:
            path.write_text(text, encoding="utf-8")
            return self.bulk.load(path)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace(str(path), "the CSV")) from exc
        finally:
            path.unlink(missing_ok=True)

    def start(self, job: str) -> None:
        """Run a job's unfinished rows in the background (once at a time per job)."""
        with self._lock:
            if job in self._running and self._running[job].is_alive():
                return
            thread = threading.Thread(target=self._run, args=(job,), name="bulk", daemon=True)
            self._running[job] = thread
        thread.start()

    def stop(self, timeout: float = 10) -> None:
        """Cut the jobs' associations in flight and wait for their threads: the rows they served
        stay pending, taken up again at the next start."""
        self.bulk.stop()
        with self._lock:
            threads = list(self._running.values())
        for thread in threads:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("a bulk job did not stop within %.0f s", timeout)

    def resume(self) -> None:
        """Take up every job with rows not yet done (after a restart)."""
        for row in self.store.bulk_jobs():
            if row["pending"]:
                self.start(str(row["job"]))

    def _run(self, job: str) -> None:
        try:
            self.bulk.run(job)
        except Exception as exc:  # a row's failure is recorded by bulk; this is anything else
            log.error("bulk job %s stopped: %s", job, type(exc).__name__)  # noqa: TRY400 - no values


def _csv(matches: list[Match], trial: str) -> str:
    buf = io.StringIO()
    out = csv.writer(buf)
    out.writerow(HEADER)
    for m in matches:
        date = m.study_date if not m.accession else ""
        out.writerow([m.accession, "" if m.accession else m.patient_id, date, "", trial])
    return buf.getvalue()


def add(site: Site, config: Config, ingestor: Ingestor, trials: Trials) -> Retrievals:
    """The query/retrieve and bulk pages; returns the job runner (resume it at start)."""
    jobs = Retrievals(config, ingestor, trials.protocols.keys())
    site.on_stop.append(jobs.stop)
    store = ingestor.store

    def query_of(request: Request) -> dict[str, str]:
        q = request.query_params
        return {k: q.get(k, "").strip()[:64] for k in QUERY}

    def search(q: dict[str, str]) -> list[Match]:
        dates = f"{q['date_from']}-{q['date_to']}" if q["date_from"] or q["date_to"] else ""
        query = study_query(q["patient_id"], q["accession"], dates, q["modality"])
        return find(jobs.peer, query, jobs.bulk.cancel)  # cut, too, when the node stops

    @site.page("/qr")
    def qr(request: Request, session: Session) -> Response:
        q = query_of(request)
        matches, error = [], ""
        if q["patient_id"] or q["accession"] or q["date_from"] or q["date_to"]:
            try:
                matches = search(q)
            except RetriableError as exc:
                error = f"the PACS did not answer: {exc}"
        return site.render(
            "qr.html", session, q=q, matches=matches, error=error, trials=sorted(trials.protocols)
        )

    @site.action("/qr/retrieve")
    def retrieve(request: Request, session: Session, form: dict[str, str]) -> Response:
        q = {k: form.get(k, "") for k in QUERY}
        trial = form.get("trial", "")
        if trial and trials.get(trial) is None:  # the form offers only the node's trials
            return site.render("error.html", session, 409, message="This node has no such trial.")
        try:
            chosen = {k[6:] for k in form if k.startswith("study:")}
            matches = [m for m in search(q) if m.study_uid in chosen]
        except RetriableError as exc:
            message = f"the PACS did not answer: {exc}"
            return site.render("error.html", session, 502, message=message)
        if not matches:
            return site.render("error.html", session, 409, message="Choose at least one study.")
        job = jobs.load_text(_csv(matches, trial))
        detail = f"job {job}: {len(matches)} stud(ies)"
        store.audit_node(session.user.name, "retrieve from PACS", detail)
        jobs.start(job)
        return RedirectResponse(f"/bulk/{job}", status_code=303)

    @site.page("/bulk")
    def bulk_page(request: Request, session: Session) -> Response:
        return site.render("bulk.html", session, jobs=store.bulk_jobs(), error="", text="")

    @site.action("/bulk", max_form=MAX_BULK_FORM)
    def upload(request: Request, session: Session, form: dict[str, str]) -> Response:
        text = form.get("csv", "")
        try:
            job = jobs.load_text(text)
        except ConfigError as exc:
            return site.render(
                "bulk.html", session, 409, jobs=store.bulk_jobs(), error=str(exc), text=text
            )
        store.audit_node(session.user.name, "bulk CSV uploaded", f"job {job}")
        jobs.start(job)
        return RedirectResponse(f"/bulk/{job}", status_code=303)

    @site.page("/bulk/{job}")
    def job_page(request: Request, session: Session, job: str) -> Response:
        rows = jobs.bulk.report(job)
        if not rows:
            return site.render("error.html", session, 404, message="No such bulk job.")
        template = "bulk_rows.html" if request.headers.get("hx-request") else "bulk_job.html"
        asked = store.bulk_requests(job)
        return site.render(template, session, job=job, rows=rows, asked=asked)

    return jobs
