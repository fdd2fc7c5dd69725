"""The identifiable node: wires ingest (SCP, folder), the store and the pipeline workers.

Runs in the foreground; SIGTERM or SIGINT sets a flag, then the node's parts stop in the order
``IdentifiableNode`` gives: the SCP stops taking associations, the workers finish their current
step, the journal is written out, and the process exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from identifiable_node.config import Config, load_config
from identifiable_node.folder import FolderWatcher
from identifiable_node.ingest import Ingestor
from identifiable_node.optout import OptOut
from identifiable_node.pipeline import Pipeline
from identifiable_node.store import Store
from identifiable_node.trials import Trials
from identifiable_node.web.server import web_server
from uploader import relay
from uploader.deid.pseudonyms import read_key
from uploader.dicomnet import quiet_pynetdicom
from uploader.dicomnet.scp import Received, ScpOptions, StoreServer, start_scp
from uploader.errors import ConfigError
from uploader.health import Health
from uploader.node.config import read_secret
from uploader.node.lifecycle import Node
from uploader.node.ready import announce, withdraw
from uploader.node.worker import worker_thread
from uploader.preflight import Problems
from uploader.store.journal import Journal, JournalBusyError
from uploader.store.spool import Spool
from uploader.transport.forwardsig import ForwardKey
from uploader.transport.stowrs import StowClient
from uploader.web.serve import PagesThread

log = logging.getLogger(__name__)


def open_store(config: Config) -> tuple[Store, Spool]:
    """The node's database and folders under ``node.data_dir``."""
    spool = Spool(config.node.data_dir)
    return Store(config.node.data_dir / "node.sqlite"), spool


def _forwarder(config: Config) -> StowClient:
    fwd = config.forward
    token = read_secret(fwd.token_file, "forward token") if fwd.token_file else None
    return StowClient(
        fwd.url,
        ca_bundle=fwd.ca_bundle,
        token=token,
        timeout_s=fwd.timeout_s,
        allow_plain_http=fwd.allow_plain_http,
        signer=ForwardKey.from_file(fwd.key_file) if fwd.key_file else None,
    )


def _pipeline(config: Config, ingestor: Ingestor, trials: Trials) -> Pipeline:
    return Pipeline(
        config,
        store=ingestor.store,
        spool=ingestor.spool,
        trials=trials,
        optout=OptOut(config.optout.file, config.optout.mode),
        forwarder=_forwarder(config),
        owner=f"worker-{os.getpid()}",
        busy=ingestor.busy,
        deid_processes=config.workers.deid_processes or min(4, os.cpu_count() or 1),
    )


def preflight(config: Config, config_path: Path) -> tuple[bytes, Trials]:
    """Check everything the node will read before anything is created on disk.

    Returns the site key and the trials. Raises:
        ConfigError: every problem found, listed together.
    """
    problems = Problems(config_path)
    key = problems.check(lambda: read_key(config.node.key_file))
    node, fwd = config.node, config.forward
    problems.readable(fwd.ca_bundle, "forward CA bundle (forward.ca_bundle)")
    if fwd.token_file is not None:
        problems.check(lambda: read_secret(fwd.token_file, "forward token"))
    problems.readable(config.optout.file, "opt-out list (optout.file)")
    problems.readable(node.site_script, "site script (node.site_script)")
    problems.readable(node.site_patterns, "site pattern table (node.site_patterns)")
    web = config.web  # the staff pages' certificate (issue 16)
    if web.listen and not web.allow_plain_http and (web.tls_cert is None or web.tls_key is None):
        problems.items.append("web.listen: set web.tls_cert and web.tls_key (HTTPS)")
    problems.readable(web.tls_cert, "pages' certificate (web.tls_cert)")
    problems.readable(web.tls_key, "pages' key (web.tls_key)")
    for protocol, csv_path in config.manual_ids.items():
        problems.readable(csv_path, f"manual trial IDs of {protocol} (manual_ids)")
    trials = None
    if key is not None:
        trials = problems.check(
            lambda: Trials(
                node.protocols_dir,
                key,
                node.site,
                node.site_script,
                {},
                site_patterns=node.site_patterns,
            )
        )
    problems.raise_if_any()
    assert key is not None and trials is not None
    if config.manual_ids:  # read once all the files are known to be there
        trials = Trials(
            node.protocols_dir,
            key,
            node.site,
            node.site_script,
            dict(config.manual_ids),
            site_patterns=node.site_patterns,
        )
    return key, trials


def _folder_thread(
    config: Config, ingestor: Ingestor, trials: Trials, stop: threading.Event, health: Health
) -> threading.Thread:
    """The watched folder's thread. The watcher beats its health part after each good scan and
    marks it failed when the folder cannot be scanned or files cannot be moved out; the thread
    is watched from outside as well (it never ends by itself)."""
    stale = max(60.0, 10 * config.folder.poll_interval_s)
    part = health.component("folder", stale_after_s=stale)
    watcher = FolderWatcher(
        config.folder,
        ingestor,
        set(trials.protocols),
        max_bytes=config.scp.max_instance_mb << 20,
        health=part,
    )
    thread = threading.Thread(target=watcher.run, args=(stop,), name="folder", daemon=True)
    health.watch_thread("folder", thread)
    return thread


def _watch_ingest(health: Health, ingestor: Ingestor, server: StoreServer | None) -> None:
    if server is not None:
        health.probe("scp", lambda: None if server.alive() else "it stopped listening")
    if ingestor.journal is None:
        return

    def journal_problem() -> str | None:
        if not ingestor.writer_alive():
            return "the spool writer stopped"
        state = ingestor.status()
        if state.get("checkpoints_stopped"):
            return "a spool fsync failed: fix the disk, then restart the node"
        if state.get("retired"):
            return "the journal's disk failed: instances are stored the slow way; restart"
        if state.get("failing_spool_writes"):
            return f"{state['failing_spool_writes']} instance(s) cannot be written to the spool"
        return None

    health.probe("journal", journal_problem)


def _start_scp(config: Config, ingestor: Ingestor) -> StoreServer:
    scp = config.scp
    options = ScpOptions(
        scp.ae_title,
        allowed_calling=scp.allowed_calling_aets,
        max_associations=scp.max_associations,
        sop_classes=scp.sop_classes,
        transfer_syntaxes=scp.transfer_syntaxes,
        timeout_s=scp.timeout_s,
        max_instance_bytes=scp.max_instance_mb << 20,
    )

    def store_fn(received: Received) -> None:
        protocol = scp.protocols_by_called_aet.get(received.called_aet)
        ingestor.take_bytes(
            received.parts,
            source=f"scp:{received.calling_aet}",
            protocol=protocol,
            crc=received.crc32,
        )

    server = start_scp(options, scp.host, scp.port, store_fn)
    log.info("C-STORE SCP %s listening on port %s", scp.ae_title, server.server_address[1])
    return server


def _links(config: Config, stop: threading.Event, health: Health) -> list[threading.Thread]:
    """This node's side of its links to the DICOM gateway (none outside Compose)."""
    if not config.links:
        return []
    thread = relay.start_thread(relay.parse_routes(config.links), stop)
    health.watch_thread("links", thread)
    return [thread]


class IdentifiableNode(Node):
    """The running identifiable node. Parts come up in this order and stop in the reverse:
    the health registry, the journal, the journal's writer (it drains the journal into the
    spool), the pipeline, the C-STORE SCP, the watched folder, the links, the staff pages, the
    health monitor, the ready file. So on stop the ready file goes first, then the pages (no
    new decisions), then everything that receives instances (links, folder, SCP: nothing new
    arrives), then the pipeline (its current step finishes), then the writer (it writes out
    what producers handed it), then the journal."""

    def __init__(
        self,
        config: Config,
        trials: Trials,
        on_stop_step: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(on_stop_step)
        self.config, self.trials = config, trials
        self.scp: StoreServer | None = None
        self.threads: dict[str, threading.Thread] = {}  # the parts that run in a thread

    def _start(self) -> None:
        config, stop = self.config, self.stopping
        data_dir = config.node.data_dir
        store, spool = open_store(config)
        health = Health(data_dir)
        self.started("health", health.close)
        journal = None
        if config.scp.enabled and config.scp.journal_mb:
            try:
                journal = Journal(data_dir / "journal", config.scp.journal_mb << 20)
            except JournalBusyError as exc:
                raise ConfigError(f"{exc}: is another node running on this data_dir?") from exc
            self.started("journal", journal.close)
        ingestor = Ingestor(store, spool, journal)
        ingestor.recover()
        ingestor.rescan()
        ingestor.start()
        self.started("journal writer", ingestor.stop)
        pipeline_part = health.component("pipeline", stale_after_s=config.workers.lease_s + 60)
        pipeline = _pipeline(config, ingestor, self.trials)
        idle_s = config.workers.idle_s
        worker = worker_thread("pipeline", pipeline.step, stop, pipeline_part, idle_s)
        health.watch_thread("pipeline", worker)
        self._thread("pipeline", worker)
        ready: dict[str, object] = {"pid": os.getpid()}
        if config.scp.enabled:
            self.scp = server = _start_scp(config, ingestor)
            self.started("scp", server.shutdown)
            ready["scp_port"] = server.server_address[1]
        _watch_ingest(health, ingestor, self.scp)
        if config.folder.enabled:
            self._thread("folder", _folder_thread(config, ingestor, self.trials, stop, health))
        for thread in _links(config, stop, health):
            self._thread("links", thread)
        stop_pages = _pages(config, ingestor, self.trials, stop, health)
        if stop_pages is not None:  # staff pages on web.listen: stopped first, after the ready file
            self.started("pages", stop_pages)
        health.start(stop)
        announce(data_dir, ready)
        self.started("ready file", lambda: withdraw(data_dir))

    def _thread(self, name: str, thread: threading.Thread) -> None:
        """Start a part's thread; stopping it waits for it (``stopping`` is already set)."""
        thread.start()
        self.threads[name] = thread
        self.started(name, lambda: thread.join(timeout=30))


def _pages(
    config: Config, ingestor: Ingestor, trials: Trials, stop: threading.Event, health: Health
) -> Callable[[], None] | None:
    """Start the staff pages' thread; return its stop (None when ``web.listen`` is empty)."""
    made = web_server(config, ingestor, trials)
    if made is None:
        return None
    pages, site = made
    thread = PagesThread(pages, stop.set)
    health.watch_thread("web", thread)
    thread.start()

    def stop_pages() -> None:  # no new request first, then what the pages run (bulk jobs)
        thread.stop()
        site.stop()

    return stop_pages


def run(config_path: Path) -> int:
    """Run the node until SIGTERM; return the exit code."""
    config = load_config(config_path)
    logging.getLogger().setLevel(config.node.log_level)
    quiet_pynetdicom()
    _key, trials = preflight(config, config_path)  # nothing is created before this passes
    node = IdentifiableNode(config, trials)

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        node.request_stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with node:
        node.wait()
    log.info("stopped")
    return 1 if node.stop_failures else 0
