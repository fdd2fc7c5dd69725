"""The DICOM upper layer's PDUs (PS3.8 section 9.3): named constants, parsing and building.

Pure functions and frozen data classes, no sockets, so the codec can be tested (and fuzzed) on
its own. Anything that is not a well-formed PDU raises :class:`PduError`, and nothing else:
the association turns it into an A-ABORT. Parsing returns views of the caller's buffer where
the data is bulk (P-DATA fragments), so a received data set is never copied here.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum, IntFlag

HEADER_LENGTH = 6  # PDU type, reserved, 4-byte length
AE_TITLES_LENGTH = 64  # called AE (16), calling AE (16), reserved (32)
ASSOCIATE_FIXED_LENGTH = 68  # protocol version (2), reserved (2), the AE titles' 64


class PduError(ValueError):
    """Bytes that are not a well-formed PDU (or item, or PDV): the peer broke the protocol."""


class PduType(IntEnum):
    """PDU types (PS3.8 table 9-11 and following)."""

    ASSOCIATE_RQ = 0x01
    ASSOCIATE_AC = 0x02
    ASSOCIATE_RJ = 0x03
    P_DATA_TF = 0x04
    RELEASE_RQ = 0x05
    RELEASE_RP = 0x06
    ABORT = 0x07


class ItemType(IntEnum):
    """Item types of A-ASSOCIATE-RQ/AC variable fields and of their user information."""

    APPLICATION_CONTEXT = 0x10
    PRESENTATION_CONTEXT_RQ = 0x20
    PRESENTATION_CONTEXT_AC = 0x21
    ABSTRACT_SYNTAX = 0x30
    TRANSFER_SYNTAX = 0x40
    USER_INFORMATION = 0x50
    MAXIMUM_LENGTH = 0x51
    IMPLEMENTATION_CLASS_UID = 0x52
    ASYNCHRONOUS_OPERATIONS = 0x53
    ROLE_SELECTION = 0x54
    IMPLEMENTATION_VERSION_NAME = 0x55


class ContextResult(IntEnum):
    """A presentation context's result in an A-ASSOCIATE-AC (PS3.8 table 9-18)."""

    ACCEPTANCE = 0
    USER_REJECTION = 1
    NO_REASON = 2
    ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
    TRANSFER_SYNTAXES_NOT_SUPPORTED = 4


class RejectResult(IntEnum):
    """A-ASSOCIATE-RJ result (PS3.8 table 9-21)."""

    PERMANENT = 1
    TRANSIENT = 2


class RejectSource(IntEnum):
    """A-ASSOCIATE-RJ source."""

    SERVICE_USER = 1
    SERVICE_PROVIDER_ACSE = 2
    SERVICE_PROVIDER_PRESENTATION = 3


class UserRejectReason(IntEnum):
    """A-ASSOCIATE-RJ reasons when the source is the service user."""

    NO_REASON = 1
    APPLICATION_CONTEXT_NOT_SUPPORTED = 2
    CALLING_AE_NOT_RECOGNIZED = 3
    CALLED_AE_NOT_RECOGNIZED = 7


class AcseRejectReason(IntEnum):
    """A-ASSOCIATE-RJ reasons when the source is the service provider (ACSE)."""

    NO_REASON = 1
    PROTOCOL_VERSION_NOT_SUPPORTED = 2


class PresentationRejectReason(IntEnum):
    """A-ASSOCIATE-RJ reasons when the source is the service provider (presentation)."""

    TEMPORARY_CONGESTION = 1
    LOCAL_LIMIT_EXCEEDED = 2


class AbortSource(IntEnum):
    """A-ABORT source (PS3.8 table 9-26)."""

    SERVICE_USER = 0
    RESERVED = 1
    SERVICE_PROVIDER = 2


class AbortReason(IntEnum):
    """A-ABORT reason (meaningful when the source is the service provider)."""

    NOT_SPECIFIED = 0
    UNRECOGNIZED_PDU = 1
    UNEXPECTED_PDU = 2
    RESERVED = 3
    UNRECOGNIZED_PDU_PARAMETER = 4
    UNEXPECTED_PDU_PARAMETER = 5
    INVALID_PDU_PARAMETER = 6


class PdvControl(IntFlag):
    """The message control header of a presentation data value."""

    COMMAND = 0x01  # else a data set fragment
    LAST = 0x02  # the last fragment of the command set or data set


Buffer = bytes | memoryview


# -- framing -------------------------------------------------------------------------------
def encode_pdu(kind: int, body: bytes) -> bytes:
    """A PDU: type, reserved, length, then ``body``."""
    return struct.pack(">BxI", kind, len(body)) + body


def pdu_header(head: Buffer) -> tuple[int, int]:
    """(PDU type, body length) from the first six bytes of a PDU. Raises PduError."""
    if len(head) != HEADER_LENGTH:
        raise PduError("a PDU header is six bytes")
    kind, length = struct.unpack(">BxI", head)
    return kind, length


def encode_item(kind: int, body: bytes) -> bytes:
    """An item of a variable field: type, reserved, 2-byte length, then ``body``."""
    if len(body) > 0xFFFF:
        raise PduError("an item longer than 65535 bytes")
    return struct.pack(">BxH", kind, len(body)) + body


def parse_items(data: memoryview) -> list[tuple[int, memoryview]]:
    """The items of a variable field (or of an item's value): (type, value) in order. Trailing
    bytes too few for an item header are ignored; an item longer than the rest raises
    PduError."""
    out: list[tuple[int, memoryview]] = []
    pos = 0
    while pos + 4 <= len(data):
        kind = data[pos]
        length = (data[pos + 2] << 8) | data[pos + 3]
        if pos + 4 + length > len(data):
            raise PduError("truncated A-ASSOCIATE item")
        out.append((kind, data[pos + 4 : pos + 4 + length]))
        pos += 4 + length
    return out


def _text(value: Buffer) -> str:
    return bytes(value).rstrip(b"\0 ").decode("ascii", "replace")


def _uid(value: str) -> bytes:
    """A UID as an item value (no padding: items carry their exact length)."""
    try:
        return value.encode("ascii")
    except UnicodeEncodeError as exc:
        raise PduError("a UID that is not ASCII") from exc


def ae_titles(called: str, calling: str) -> bytes:
    """The 64 bytes after the protocol version of an A-ASSOCIATE-RQ: two AE titles padded to 16
    bytes with spaces, then 32 reserved bytes."""
    fields = []
    for title in (called, calling):
        raw = title.encode("ascii", "replace")
        if len(raw) > 16:
            raise PduError("an AE title longer than 16 characters")
        fields.append(raw.ljust(16, b" "))
    return b"".join(fields) + bytes(32)


# -- A-ASSOCIATE ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ProposedContext:
    """A presentation context item of an A-ASSOCIATE-RQ."""

    context_id: int
    abstract_syntax: str  # "" when the item had none
    transfer_syntaxes: tuple[str, ...]


@dataclass(frozen=True)
class AcceptedContext:
    """A presentation context item of an A-ASSOCIATE-AC: the result and the chosen syntax."""

    context_id: int
    result: int  # a ContextResult (kept as received)
    transfer_syntax: str


@dataclass(frozen=True)
class UserInformation:
    """The user information sub-items we read (others are skipped when parsing)."""

    max_pdu_length: int = 0  # 0: unlimited (or not given)
    implementation_class_uid: str = ""
    implementation_version: str = ""

    def encode(self) -> bytes:
        """The user information item (maximum length always; the others when set)."""
        body = encode_item(ItemType.MAXIMUM_LENGTH, struct.pack(">I", self.max_pdu_length))
        if self.implementation_class_uid:
            body += encode_item(
                ItemType.IMPLEMENTATION_CLASS_UID, _uid(self.implementation_class_uid)
            )
        if self.implementation_version:
            body += encode_item(
                ItemType.IMPLEMENTATION_VERSION_NAME, _uid(self.implementation_version)
            )
        return encode_item(ItemType.USER_INFORMATION, body)


def _user_information(value: memoryview) -> UserInformation:
    max_pdu, uid, version = 0, "", ""
    for sub, v in parse_items(value):
        if sub == ItemType.MAXIMUM_LENGTH and len(v) == 4:
            max_pdu = struct.unpack(">I", v)[0]
        elif sub == ItemType.IMPLEMENTATION_CLASS_UID:
            uid = _text(v)
        elif sub == ItemType.IMPLEMENTATION_VERSION_NAME:
            version = _text(v)
    return UserInformation(max_pdu, uid, version)


@dataclass(frozen=True)
class AssociateRequest:
    """An A-ASSOCIATE-RQ's body."""

    protocol_version: int
    titles: bytes  # the 64 bytes of AE titles and reserved field, as received
    application_context: str
    contexts: tuple[ProposedContext, ...]
    user: UserInformation

    @property
    def called_ae(self) -> str:
        """The called AE title, without padding."""
        return self.titles[0:16].decode("ascii", "replace").strip()

    @property
    def calling_ae(self) -> str:
        """The calling AE title, without padding."""
        return self.titles[16:32].decode("ascii", "replace").strip()

    def encode(self) -> bytes:
        """The whole PDU."""
        items = [encode_item(ItemType.APPLICATION_CONTEXT, _uid(self.application_context))]
        for cx in self.contexts:
            subs = encode_item(ItemType.ABSTRACT_SYNTAX, _uid(cx.abstract_syntax)) + b"".join(
                encode_item(ItemType.TRANSFER_SYNTAX, _uid(ts)) for ts in cx.transfer_syntaxes
            )
            body = struct.pack(">BBBB", cx.context_id, 0, 0, 0) + subs
            items.append(encode_item(ItemType.PRESENTATION_CONTEXT_RQ, body))
        items.append(self.user.encode())
        return encode_pdu(
            PduType.ASSOCIATE_RQ, _fixed(self.protocol_version, self.titles) + b"".join(items)
        )


def _fixed(version: int, titles: bytes) -> bytes:
    if len(titles) != AE_TITLES_LENGTH:
        raise PduError("the AE titles field is 64 bytes")
    return struct.pack(">HH", version, 0) + titles


def parse_associate_rq(body: memoryview) -> AssociateRequest:
    """An A-ASSOCIATE-RQ from its body (the bytes after the PDU header). Items other than the
    application context, presentation contexts and user information are skipped. Raises
    PduError."""
    if len(body) < ASSOCIATE_FIXED_LENGTH:
        raise PduError("expected an A-ASSOCIATE-RQ")
    version = (body[0] << 8) | body[1]
    app_context = ""
    proposed: list[ProposedContext] = []
    user = UserInformation()
    for kind, value in parse_items(body[ASSOCIATE_FIXED_LENGTH:]):
        if kind == ItemType.APPLICATION_CONTEXT:
            app_context = _text(value)
        elif kind == ItemType.PRESENTATION_CONTEXT_RQ:
            if len(value) < 4:
                raise PduError("truncated presentation context")
            subs = parse_items(value[4:])
            abstract = next((_text(v) for k, v in subs if k == ItemType.ABSTRACT_SYNTAX), "")
            syntaxes = tuple(_text(v) for k, v in subs if k == ItemType.TRANSFER_SYNTAX)
            proposed.append(ProposedContext(value[0], abstract, syntaxes))
        elif kind == ItemType.USER_INFORMATION:
            user = _user_information(value)
    return AssociateRequest(
        version, bytes(body[4:ASSOCIATE_FIXED_LENGTH]), app_context, tuple(proposed), user
    )


@dataclass(frozen=True)
class AssociateAccept:
    """An A-ASSOCIATE-AC's body."""

    protocol_version: int
    titles: bytes  # echoed from the request
    application_context: str
    contexts: tuple[AcceptedContext, ...]
    user: UserInformation

    def encode(self) -> bytes:
        """The whole PDU."""
        items = [encode_item(ItemType.APPLICATION_CONTEXT, _uid(self.application_context))]
        for cx in self.contexts:
            sub = encode_item(ItemType.TRANSFER_SYNTAX, _uid(cx.transfer_syntax))
            body = struct.pack(">BxBx", cx.context_id, cx.result) + sub
            items.append(encode_item(ItemType.PRESENTATION_CONTEXT_AC, body))
        items.append(self.user.encode())
        return encode_pdu(
            PduType.ASSOCIATE_AC, _fixed(self.protocol_version, self.titles) + b"".join(items)
        )


def parse_associate_ac(body: memoryview) -> AssociateAccept:
    """An A-ASSOCIATE-AC from its body. Raises PduError."""
    if len(body) < ASSOCIATE_FIXED_LENGTH:
        raise PduError("expected an A-ASSOCIATE-AC")
    version = (body[0] << 8) | body[1]
    app_context = ""
    accepted: list[AcceptedContext] = []
    user = UserInformation()
    for kind, value in parse_items(body[ASSOCIATE_FIXED_LENGTH:]):
        if kind == ItemType.APPLICATION_CONTEXT:
            app_context = _text(value)
        elif kind == ItemType.PRESENTATION_CONTEXT_AC:
            if len(value) < 4:
                raise PduError("truncated presentation context")
            subs = parse_items(value[4:])
            syntax = next((_text(v) for k, v in subs if k == ItemType.TRANSFER_SYNTAX), "")
            accepted.append(AcceptedContext(value[0], value[2], syntax))
        elif kind == ItemType.USER_INFORMATION:
            user = _user_information(value)
    return AssociateAccept(
        version, bytes(body[4:ASSOCIATE_FIXED_LENGTH]), app_context, tuple(accepted), user
    )


@dataclass(frozen=True)
class AssociateReject:
    """An A-ASSOCIATE-RJ: result, source and reason (the reason's meaning depends on the
    source: UserRejectReason, AcseRejectReason or PresentationRejectReason)."""

    result: int
    source: int
    reason: int

    def encode(self) -> bytes:
        """The whole PDU."""
        return encode_pdu(PduType.ASSOCIATE_RJ, _three_bytes(self.result, self.source, self.reason))


@dataclass(frozen=True)
class Abort:
    """An A-ABORT: source and reason."""

    source: int = AbortSource.SERVICE_PROVIDER
    reason: int = AbortReason.NOT_SPECIFIED

    def encode(self) -> bytes:
        """The whole PDU."""
        try:
            return encode_pdu(PduType.ABORT, struct.pack(">xxBB", self.source, self.reason))
        except struct.error as exc:
            raise PduError("an A-ABORT field out of range") from exc


def _three_bytes(a: int, b: int, c: int) -> bytes:
    try:
        return struct.pack(">xBBB", a, b, c)
    except struct.error as exc:
        raise PduError("an A-ASSOCIATE-RJ field out of range") from exc


@dataclass(frozen=True)
class Release:
    """An A-RELEASE-RQ (``reply`` False) or A-RELEASE-RP (True): four reserved bytes."""

    reply: bool

    def encode(self) -> bytes:
        """The whole PDU."""
        return encode_pdu(PduType.RELEASE_RP if self.reply else PduType.RELEASE_RQ, bytes(4))


RELEASE_RP = Release(reply=True).encode()


# -- P-DATA-TF -----------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Pdv:
    """A presentation data value: its context, its control header, and the fragment (a view of
    the PDU's buffer when parsed)."""

    context_id: int
    control: int  # PdvControl flags
    fragment: Buffer

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Pdv):
            return NotImplemented
        return (self.context_id, self.control, bytes(self.fragment)) == (
            other.context_id,
            other.control,
            bytes(other.fragment),
        )

    def __hash__(self) -> int:
        return hash((self.context_id, self.control, bytes(self.fragment)))


def iter_pdvs(body: memoryview) -> Iterator[Pdv]:
    """The PDVs of a P-DATA-TF body, one at a time (a malformed one raises PduError when it is
    reached, after the ones before it were yielded)."""
    pos = 0
    while pos < len(body):
        if pos + 6 > len(body):
            raise PduError("truncated PDV")
        length, context_id, control = struct.unpack(">IBB", body[pos : pos + 6])
        if length < 2 or pos + 4 + length > len(body):
            raise PduError("PDV length out of range")
        yield Pdv(context_id, control, body[pos + 6 : pos + 4 + length])
        pos += 4 + length


def encode_p_data(pdvs: list[Pdv]) -> bytes:
    """A P-DATA-TF PDU holding ``pdvs``."""
    try:
        body = b"".join(
            struct.pack(">IBB", len(p.fragment) + 2, p.context_id, p.control) + bytes(p.fragment)
            for p in pdvs
        )
    except struct.error as exc:
        raise PduError("a PDV field out of range") from exc
    return encode_pdu(PduType.P_DATA_TF, body)


def command_pdus(context_id: int, command: bytes, peer_max_pdu: int) -> list[bytes]:
    """A command set as P-DATA-TF PDUs of one PDV each, each within the peer's maximum PDU
    length (0: unlimited; a maximum under 7 cannot carry a fragment and raises PduError)."""
    room = (peer_max_pdu or len(command) + 6) - 6
    if room < 1:
        raise PduError("the peer's maximum PDU length cannot carry a command")
    chunks = [command[i : i + room] for i in range(0, len(command), room)] or [b""]
    last = len(chunks) - 1
    return [
        encode_p_data(
            [Pdv(context_id, PdvControl.COMMAND | (PdvControl.LAST if i == last else 0), chunk)]
        )
        for i, chunk in enumerate(chunks)
    ]


# -- any PDU -------------------------------------------------------------------------------
@dataclass(frozen=True)
class PData:
    """A P-DATA-TF: its PDVs."""

    pdvs: tuple[Pdv, ...]

    def encode(self) -> bytes:
        """The whole PDU."""
        return encode_p_data(list(self.pdvs))


Pdu = AssociateRequest | AssociateAccept | AssociateReject | PData | Release | Abort


def decode_pdu(data: Buffer) -> Pdu:
    """One whole PDU (header and body, nothing after it) as its data class. Raises PduError for
    anything else: an unknown type, a length that does not match, a malformed body."""
    view = memoryview(data)
    kind, length = pdu_header(view[:HEADER_LENGTH])
    body = view[HEADER_LENGTH:]
    if length != len(body):
        raise PduError(f"PDU length {length} but {len(body)} bytes follow")
    if kind == PduType.ASSOCIATE_RQ:
        return parse_associate_rq(body)
    if kind == PduType.ASSOCIATE_AC:
        return parse_associate_ac(body)
    if kind in (PduType.ASSOCIATE_RJ, PduType.ABORT):
        if len(body) != 4:
            raise PduError("an A-ASSOCIATE-RJ or A-ABORT body is four bytes")
        if kind == PduType.ABORT:
            return Abort(body[2], body[3])
        return AssociateReject(body[1], body[2], body[3])
    if kind == PduType.P_DATA_TF:
        return PData(tuple(iter_pdvs(body)))
    if kind in (PduType.RELEASE_RQ, PduType.RELEASE_RP):
        if len(body) != 4:
            raise PduError("an A-RELEASE body is four bytes")
        return Release(reply=kind == PduType.RELEASE_RP)
    raise PduError(f"unknown PDU type {kind}")
