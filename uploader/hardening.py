"""What every process that touches DICOM runs first: pydicom quiet, and no values in reports.

pydicom's warnings and log lines quote the values they complain about (a patient's name, a
birth date), and an exception's message can carry one too. ``harden_process`` is the one place
that stops both, and it must run in every such process: the command line, the nodes, and the
de-identification worker processes (``forkserver`` children start from nothing: settings made
in the parent do not reach them).

After it:
- pydicom validates nothing while reading or writing (no "Invalid value for VR ..." warnings),
  its logger is silenced and its warnings are ignored;
- any other warning is shown as its category and where it was raised, without its text;
- an exception nobody caught (in the main thread or another thread) is reported as its type
  and the chain of ``file:line`` where it went, without its message.
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
import warnings
from types import TracebackType
from typing import TextIO

log = logging.getLogger(__name__)


#: What pydicom imports only to decode pixels (numpy, Pillow) or to download its test files
#: (requests, tqdm): about a third of its import time, and a header-only command needs none of them.
_PIXEL_AND_DOWNLOAD_MODULES = ("numpy", "PIL", "requests", "tqdm")


def harden_process(*, headers_only: bool = False) -> None:
    """Silence pydicom and keep values out of warnings and uncaught exceptions (idempotent).

    ``headers_only``: the process never decodes pixels nor downloads (``uploader anonymise``,
    ``uploader verify``): pydicom is imported without numpy, Pillow and requests, which makes
    the command start about 0.13 s sooner. pydicom then works without them as if they were not
    installed (a ``pixel_array`` in that process would fail), while the modules themselves
    stay importable for any other use. Nothing changes if pydicom is already imported.
    """
    if headers_only and "pydicom" not in sys.modules:
        _import_pydicom_without(_PIXEL_AND_DOWNLOAD_MODULES)
    from pydicom import config

    config.settings.reading_validation_mode = config.IGNORE
    config.settings.writing_validation_mode = config.IGNORE
    pydicom_log = logging.getLogger("pydicom")
    pydicom_log.setLevel(logging.CRITICAL + 1)
    pydicom_log.propagate = False
    if not any(isinstance(h, logging.NullHandler) for h in pydicom_log.handlers):
        pydicom_log.addHandler(logging.NullHandler())
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
    warnings.showwarning = _show_warning
    sys.excepthook = _excepthook
    threading.excepthook = _thread_excepthook


def _import_pydicom_without(names: tuple[str, ...]) -> None:
    """Import pydicom while ``names`` cannot be imported (its optional imports then fail as if
    absent), then make them importable again."""
    blocked = [n for n in names if n not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # an import of it raises ImportError
    try:
        import pydicom.filereader
        import pydicom.filewriter  # noqa: F401 - the import is the point
    finally:
        for name in blocked:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


def where(exc: BaseException, depth: int = 3) -> str:
    """The innermost ``depth`` frames of an exception as ``file:line`` (no values, no text)."""
    frames = traceback.extract_tb(exc.__traceback__)[-depth:]
    return " < ".join(f"{_short(f.filename)}:{f.lineno}" for f in reversed(frames))


def describe(exc: BaseException) -> str:
    """An exception in one line without its message: its type and where it was raised."""
    at = where(exc)
    return f"{type(exc).__name__} at {at}" if at else type(exc).__name__


def _short(filename: str) -> str:
    parts = filename.replace("\\", "/").split("/")
    return "/".join(parts[-2:])


def _show_warning(  # noqa: PLR0917 - the signature warnings.showwarning has
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    del message, file, line  # the text may quote a value
    log.warning("%s raised at %s:%d (text not shown)", category.__name__, _short(filename), lineno)


def _excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    exc.__traceback__ = tb
    print(f"uncaught {describe(exc)} (message not shown)", file=sys.stderr)


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None:
        return
    name = args.thread.name if args.thread is not None else "?"
    print(
        f"thread {name}: uncaught {describe(args.exc_value)} (message not shown)", file=sys.stderr
    )
