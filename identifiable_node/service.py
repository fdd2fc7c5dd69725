"""The identifiable node: wires ingest (SCP, folder), the store and the pipeline workers.

Runs in the foreground; SIGTERM or SIGINT sets a flag, the SCP stops taking associations, the
workers finish their current step, and the process exits 0.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from pathlib import Path
from types import FrameType

from identifiable_node.config import Config, load_config, read_secret
from identifiable_node.folder import FolderWatcher
from identifiable_node.ingest import Ingestor
from identifiable_node.optout import OptOut
from identifiable_node.pipeline import Pipeline
from identifiable_node.trials import Trials
from uploader.deid.pseudonyms import read_key
from uploader.dicomnet import quiet_pynetdicom
from uploader.dicomnet.scp import Received, ScpOptions, start_scp
from uploader.errors import ConfigError
from uploader.store.db import Store
from uploader.store.journal import Journal, JournalBusyError
from uploader.store.spool import Spool, durable_write
from uploader.transport.forwardsig import ForwardKey
from uploader.transport.stowrs import StowClient

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


def _workers(
    config: Config, ingestor: Ingestor, trials: Trials, stop: threading.Event
) -> threading.Thread:
    store, spool = ingestor.store, ingestor.spool
    pipeline = Pipeline(
        config,
        store=store,
        spool=spool,
        trials=trials,
        optout=OptOut(config.optout.file, config.optout.mode),
        forwarder=_forwarder(config),
        owner=f"worker-{os.getpid()}",
        busy=ingestor.busy,
        deid_processes=config.workers.deid_processes or min(4, os.cpu_count() or 1),
    )

    def loop() -> None:
        while not stop.is_set():
            if not pipeline.step():
                stop.wait(config.workers.idle_s)

    return threading.Thread(target=loop, name="pipeline", daemon=True)


def run(config_path: Path) -> int:
    """Run the node until SIGTERM; return the exit code."""
    config = load_config(config_path)
    logging.getLogger().setLevel(config.node.log_level)
    quiet_pynetdicom()
    store, spool = open_store(config)
    journal = None
    if config.scp.enabled and config.scp.journal_mb:
        try:
            journal = Journal(config.node.data_dir / "journal", config.scp.journal_mb << 20)
        except JournalBusyError as exc:
            raise ConfigError(f"{exc}: is another node running on this data_dir?") from exc
    ingestor = Ingestor(store, spool, journal)
    ingestor.recover()
    ingestor.rescan()
    ingestor.start()
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    trials = Trials(
        config.node.protocols_dir,
        read_key(config.node.key_file),
        config.node.site,
        config.node.site_script,
        dict(config.manual_ids),
    )
    threads = [_workers(config, ingestor, trials, stop)]
    server = None
    ready: dict[str, object] = {"pid": os.getpid()}
    if config.scp.enabled:
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
        ready["scp_port"] = server.server_address[1]
        log.info("C-STORE SCP %s listening on port %s", scp.ae_title, ready["scp_port"])
    if config.folder.enabled:
        watcher = FolderWatcher(
            config.folder,
            ingestor,
            set(trials.protocols),
            max_bytes=config.scp.max_instance_mb << 20,
        )
        threads.append(
            threading.Thread(target=watcher.run, args=(stop,), name="folder", daemon=True)
        )
    for t in threads:
        t.start()
    durable_write(config.node.data_dir / "node.ready", json.dumps(ready).encode())
    stop.wait()
    # producers first (the SCP, the folder watcher), then the journal's writer
    if server is not None:
        server.shutdown()
    for t in threads:
        t.join(timeout=30)
    ingestor.stop()
    if journal is not None:
        journal.close()
    (config.node.data_dir / "node.ready").unlink(missing_ok=True)
    log.info("stopped")
    return 0
