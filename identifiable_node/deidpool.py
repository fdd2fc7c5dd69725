"""De-identification of a study's instances, in worker processes when the study is large.

De-identification is Python work that holds the interpreter lock, so a study is split across
processes (``forkserver``: the node has threads, and a fork of a threaded process may inherit a
held lock). Each output is written without an fsync; the caller fsyncs them all at once before
it records them, so a crash before that redoes the study (outputs are deterministic).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pydicom.errors import InvalidDicomError

from uploader.deid.batch import file_identifiers, read_dicom
from uploader.deid.encode import encode
from uploader.deid.engine import Settings, deidentify
from uploader.deid.identifiers import Identifiers
from uploader.deid.profile import Profile
from uploader.errors import VerificationError, WithheldError
from uploader.hardening import describe, harden_process
from uploader.store.spool import name_for, quick_write

#: Below this many instances the start of the worker processes costs more than it saves.
MIN_PARALLEL = 16


@dataclass(frozen=True)
class Task:
    """The same for every instance of a study."""

    folder: Path  # where outputs go
    settings: Settings
    label: str  # the study's modality label
    subject: str | None
    session: str | None
    study: Identifiers | None = None  # everything the whole study identifies (every instance)


class Outcome(StrEnum):
    """What became of one instance."""

    WRITTEN = "written"
    WITHHELD = "withheld"  # by policy (burned-in text)
    UNVERIFIED = "unverified"  # its output failed verification: nothing of the study leaves
    FAILED = "failed"  # unreadable, or not writable


@dataclass(frozen=True)
class Done:
    """What became of one instance."""

    sop_uid: str
    status: Outcome
    out_path: str = ""
    out_sop_uid: str = ""
    subject: str = ""
    session: str = ""
    detail: str = ""  # the withholding code, or the verification problems (no values)
    struck: tuple[str, ...] = ()  # where cleaning struck part of a kept value (no values)


def study_identifiers(paths: list[Path], profile: Profile) -> Identifiers:
    """Return everything a study identifies, read from every instance's header (every level):
    staff who appear only in the RTSTRUCT are struck from the CT's descriptions too."""
    found = Identifiers()
    for path in paths:
        ident = file_identifiers(path, profile.kept_tags)[1]
        if ident is not None:
            found.update(ident)
    return found


def failure_reason(exc: BaseException) -> str:
    """Why an instance could not be read or de-identified, in one line without its values."""
    if isinstance(exc, RecursionError):
        return "its sequences are nested too deeply to be read (RecursionError)"
    if isinstance(exc, MemoryError):
        return "it is too large to be read (MemoryError)"
    if isinstance(exc, InvalidDicomError):
        return "not a readable DICOM file (InvalidDicomError)"
    if isinstance(exc, OSError):
        return f"its file cannot be read or written ({type(exc).__name__})"
    return f"it cannot be read or de-identified ({describe(exc)})"


def deid_file(sop_uid: str, path: Path, task: Task) -> Done:
    """De-identify one instance and write its output (not yet durable); every outcome is a
    result, never an exception (one bad instance must not undo the rest of the study). Any
    error, even one the code did not foresee, is a ``failed`` result whose detail names the
    kind of problem but quotes no value."""
    try:
        return _deid_file(sop_uid, path, task)
    except Exception as exc:  # hostile input can raise anything: a result, never a crash
        return Done(sop_uid, Outcome.FAILED, detail=failure_reason(exc))


def _deid_file(sop_uid: str, path: Path, task: Task) -> Done:
    ds = read_dicom(path)
    try:
        outcome = deidentify(
            ds, task.settings, task.label, task.subject, task.session, study=task.study
        )
    except WithheldError as exc:
        return Done(sop_uid, Outcome.WITHHELD, detail=exc.code)
    except VerificationError as exc:
        return Done(sop_uid, Outcome.UNVERIFIED, detail="; ".join(exc.problems[:5]))
    data = encode(outcome.dataset)  # what pydicom's save_as writes, faster
    out_uid = str(outcome.dataset.SOPInstanceUID)
    target = task.folder / name_for(out_uid)
    quick_write(target, [data])
    return Done(
        sop_uid,
        Outcome.WRITTEN,
        str(target),
        out_uid,
        outcome.subject,
        outcome.session,
        struck=tuple(outcome.struck),
    )


_TASK: Task | None = None


def _init(task: Task) -> None:
    """Start of a worker process: the same hardening as the node's, then the study's task."""
    global _TASK  # noqa: PLW0603 - per-process state of a pool worker, set once at its start
    harden_process()
    _TASK = task


def _work(item: tuple[str, Path]) -> Done:
    assert _TASK is not None
    return deid_file(item[0], item[1], _TASK)


def run(items: list[tuple[str, Path]], task: Task, processes: int) -> Iterator[Done]:
    """De-identify ``(sop_uid, path)`` items in order; in ``processes`` workers when there
    are enough of them (``processes`` <= 1: here, one after the other)."""
    if processes <= 1 or len(items) < MIN_PARALLEL:
        for sop_uid, path in items:
            yield deid_file(sop_uid, path, task)
        return
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["identifiable_node.deidpool"])
    with ProcessPoolExecutor(processes, ctx, initializer=_init, initargs=(task,)) as pool:
        yield from pool.map(_work, items, chunksize=4)
