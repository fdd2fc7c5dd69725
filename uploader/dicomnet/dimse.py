"""DIMSE command sets (PS3.7 section 9.3, implicit VR little endian, group 0000), the statuses
our acceptor answers with, and the Part 10 file meta it puts before a received data set.

Pure functions, no sockets: a command set that is not well formed raises :class:`CommandError`
(a :class:`~uploader.dicomnet.pdu.PduError`, so the association aborts on either).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from enum import IntEnum

from uploader.dicomnet.pdu import PduError
from uploader.version import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # Refused: Out of Resources
CANNOT_UNDERSTAND = 0xC000  # Error: Cannot understand
PROCESSING_FAILURE = 0x0110  # Failure: Processing failure
SOP_CLASS_NOT_SUPPORTED = 0x0122  # Refused: SOP Class not supported
UNRECOGNIZED_OPERATION = 0x0211  # Refused: Unrecognized operation

VERIFICATION = "1.2.840.10008.1.1"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"

NO_DATA_SET = 0x0101  # CommandDataSetType: no data set follows
RESPONSE_BIT = 0x8000  # a response's CommandField is the request's with this bit set


class CommandField(IntEnum):
    """The requests we read (CommandField, (0000,0100))."""

    C_STORE_RQ = 0x0001
    C_ECHO_RQ = 0x0030
    C_CANCEL_RQ = 0x0FFF


class Tag(IntEnum):
    """Element numbers of group 0000 we read or write."""

    AFFECTED_SOP_CLASS_UID = 0x0002
    COMMAND_FIELD = 0x0100
    MESSAGE_ID = 0x0110
    MESSAGE_ID_BEING_RESPONDED_TO = 0x0120
    COMMAND_DATA_SET_TYPE = 0x0800
    STATUS = 0x0900
    AFFECTED_SOP_INSTANCE_UID = 0x1000


class CommandError(PduError):
    """A command set that is not well formed (or holds a value that is not what it must be)."""


def parse_command(data: bytes) -> dict[int, bytes]:
    """A command set: element number -> raw value. Raises CommandError."""
    out: dict[int, bytes] = {}
    pos, end = 0, len(data)
    while pos + 8 <= end:
        group, elem, length = struct.unpack_from("<HHI", data, pos)
        pos += 8
        if group != 0 or pos + length > end:
            raise CommandError("malformed command set")
        out[elem] = data[pos : pos + length]
        pos += length
    return out


def encode_command(elements: Iterable[tuple[int, bytes]]) -> bytes:
    """A command set from (element, value) pairs, with its group length."""
    body = b"".join(
        struct.pack("<HHI", 0, elem, len(value)) + value for elem, value in sorted(elements)
    )
    return struct.pack("<HHII", 0, 0, 4, len(body)) + body


def text(value: bytes | None) -> str:
    """A string value without its padding (ASCII; anything else replaced)."""
    return (value or b"").rstrip(b"\0 ").decode("ascii", "replace")


def uid_text(value: bytes | None) -> str:
    """A UID of the command set; a peer that sends anything but a UID breaks the protocol
    (CommandError)."""
    result = text(value)
    if not result or len(result) > 64 or any(c not in "0123456789." for c in result):
        raise CommandError("a command set with an invalid UID")
    return result


def us(value: bytes | None) -> int:
    """An unsigned short value, or -1 when absent or not two bytes."""
    return int(struct.unpack("<H", value)[0]) if value and len(value) == 2 else -1


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def _element(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    """An explicit VR little endian element (file meta information)."""
    if vr in (b"OB", b"UN", b"SQ", b"UT"):
        return struct.pack("<HH2sxxI", group, elem, vr, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


def file_meta(sop_class: str, sop_instance: str, transfer_syntax: str, source_aet: str) -> bytes:
    """Preamble, ``DICM`` and the group 0002 of a Part 10 file for a received data set."""
    ae = source_aet.encode("ascii", "replace")
    version = IMPLEMENTATION_VERSION_NAME.encode()
    body = b"".join(
        [
            _element(2, 0x0001, b"OB", b"\x00\x01"),
            _element(2, 0x0002, b"UI", _uid(sop_class)),
            _element(2, 0x0003, b"UI", _uid(sop_instance)),
            _element(2, 0x0010, b"UI", _uid(transfer_syntax)),
            _element(2, 0x0012, b"UI", _uid(IMPLEMENTATION_CLASS_UID)),
            _element(2, 0x0013, b"SH", version + b" " * (len(version) % 2)),
            _element(2, 0x0016, b"AE", ae + b" " * (len(ae) % 2)),
        ]
    )
    return b"\0" * 128 + b"DICM" + _element(2, 0x0000, b"UL", struct.pack("<I", len(body))) + body
