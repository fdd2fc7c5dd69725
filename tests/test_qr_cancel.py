"""A query or retrieval that the PACS never answers ends at once when it is cancelled.

pynetdicom waits up to its timeouts (60 s here) for a PACS that accepted the TCP connection but
does not answer, in a thread that is not a daemon: a node stopping would hang on it. ``Cancel``
shuts the association's socket, and the call raises ``QueryCancelledError`` (it did not
happen), whether the PACS has not yet accepted the association or stalls in the middle of answering.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pynetdicom import AE, evt

from uploader.dicomnet.qr import (
    FIND,
    MOVE,
    Cancel,
    Peer,
    QueryCancelledError,
    find,
    move,
    study_query,
)


def _pynetdicom_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t is not threading.current_thread() and t.is_alive()
            and not t.daemon]  # fmt: skip


def _run_then_cancel(call: Any, after: float = 0.5) -> tuple[BaseException | None, float]:
    cancel = Cancel()
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            call(cancel)
            outcome.append(None)
        except BaseException as exc:  # what the call raised is the result
            outcome.append(exc)

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    time.sleep(after)
    started = time.monotonic()
    cancel.set()
    worker.join(10)
    took = time.monotonic() - started
    assert not worker.is_alive(), "the cancelled call is still waiting"
    return outcome[0], took


@pytest.fixture
def silent_pacs() -> Iterator[int]:
    """A port that accepts connections and never says a word."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield int(listener.getsockname()[1])
    listener.close()
    for s in held:
        s.close()


@pytest.fixture
def stalling_pacs() -> Iterator[tuple[int, threading.Event]]:
    """A real DICOM peer (pynetdicom's SCP) that accepts and then stalls inside its answer."""
    release = threading.Event()

    def stall(_event: Any) -> Iterator[tuple[int, None]]:
        release.wait(30)
        yield 0x0000, None

    ae = AE(ae_title="PACS")
    ae.add_supported_context(FIND)
    ae.add_supported_context(MOVE)
    handlers = [(evt.EVT_C_FIND, stall), (evt.EVT_C_MOVE, stall)]
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
    try:
        yield int(server.server_address[1]), release
    finally:
        release.set()
        server.shutdown()


def test_cancel_ends_a_find_the_pacs_never_accepts(silent_pacs: int) -> None:
    peer = Peer("PACS", "127.0.0.1", silent_pacs, "UPLOADER")
    before = set(_pynetdicom_threads())
    raised, took = _run_then_cancel(lambda c: find(peer, study_query(accession="A1"), c))
    assert isinstance(raised, QueryCancelledError), raised
    assert took < 3, f"took {took:.1f} s"
    time.sleep(0.5)  # pynetdicom's own thread ends as its socket closes
    assert set(_pynetdicom_threads()) - before == set(), "a non-daemon thread is left"


@pytest.mark.parametrize("operation", ["find", "move"])
def test_cancel_ends_an_answer_the_pacs_stalls_in(
    stalling_pacs: tuple[int, threading.Event], operation: str
) -> None:
    port, _release = stalling_pacs
    peer = Peer("PACS", "127.0.0.1", port, "UPLOADER")
    if operation == "find":
        raised, took = _run_then_cancel(lambda c: find(peer, study_query(accession="A1"), c), 1)
    else:
        raised, took = _run_then_cancel(lambda c: move(peer, "1.2.3.4", "UPLOADER", c), 1)
    assert isinstance(raised, QueryCancelledError), raised
    assert took < 3, f"took {took:.1f} s"


def test_a_cancel_set_before_the_call_asks_nothing(silent_pacs: int) -> None:
    cancel = Cancel()
    cancel.set()
    with pytest.raises(QueryCancelledError):
        find(Peer("PACS", "127.0.0.1", silent_pacs, "UPLOADER"), study_query(accession="A"), cancel)


def test_an_uncancelled_find_still_answers(stalling_pacs: tuple[int, threading.Event]) -> None:
    port, release = stalling_pacs
    release.set()
    assert (
        find(Peer("PACS", "127.0.0.1", port, "UPLOADER"), study_query(accession="A"), Cancel())
        == []
    )
