"""The acceptor's codec on its own, no sockets: valid PDUs round-trip, and random or mutated
bytes only ever raise the codec's own error (which the association turns into an A-ABORT),
never an IndexError, struct.error or anything else that would be a defect.

A seeded generator makes the cases, so a failure is reproducible; thousands run in well under
a second. pynetdicom's own PDU classes read what we build and build what we read.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import build_context

from uploader.dicomnet import dimse
from uploader.dicomnet.pdu import (
    Abort,
    AbortReason,
    AbortSource,
    AcceptedContext,
    AssociateAccept,
    AssociateReject,
    AssociateRequest,
    ContextResult,
    ItemType,
    PData,
    PduError,
    PduType,
    Pdv,
    PdvControl,
    ProposedContext,
    RejectResult,
    RejectSource,
    Release,
    UserInformation,
    UserRejectReason,
    ae_titles,
    command_pdus,
    decode_pdu,
    iter_pdvs,
    parse_items,
)

SEED = 14
CASES = 3000


def _uid(rng: random.Random) -> str:
    return ".".join(str(rng.randrange(1, 100000)) for _ in range(rng.randrange(2, 9)))


def _title(rng: random.Random) -> str:
    return "".join(
        rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") for _ in range(rng.randrange(1, 17))
    )


def _user(rng: random.Random) -> UserInformation:
    return UserInformation(
        rng.choice([0, 256, 16384, 1 << 20, 0xFFFFFFFF]),
        rng.choice(["", _uid(rng)]),
        rng.choice(["", "SDU_1.2.3", "X"]),
    )


def _request(rng: random.Random) -> AssociateRequest:
    contexts = tuple(
        ProposedContext(
            rng.randrange(1, 256, 2),
            _uid(rng),
            tuple(_uid(rng) for _ in range(rng.randrange(0, 4))),
        )
        for _ in range(rng.randrange(0, 6))
    )
    titles = ae_titles(_title(rng), _title(rng))
    return AssociateRequest(rng.choice([1, 2, 3]), titles, _uid(rng), contexts, _user(rng))


def _accept(rng: random.Random) -> AssociateAccept:
    contexts = tuple(
        AcceptedContext(rng.randrange(1, 256, 2), rng.choice(list(ContextResult)), _uid(rng))
        for _ in range(rng.randrange(0, 6))
    )
    titles = ae_titles(_title(rng), _title(rng))
    return AssociateAccept(1, titles, _uid(rng), contexts, _user(rng))


def _pdata(rng: random.Random) -> PData:
    return PData(
        tuple(
            Pdv(rng.randrange(1, 256, 2), rng.randrange(0, 4), rng.randbytes(rng.randrange(0, 300)))
            for _ in range(rng.randrange(0, 5))
        )
    )


MAKERS: list[Callable[[random.Random], object]] = [
    _request,
    _accept,
    _pdata,
    lambda rng: AssociateReject(
        rng.choice(list(RejectResult)), rng.choice(list(RejectSource)), rng.randrange(0, 8)
    ),
    lambda rng: Abort(rng.choice(list(AbortSource)), rng.choice(list(AbortReason))),
    lambda rng: Release(reply=rng.random() < 0.5),
]


def _valid(
    rng: random.Random,
) -> AssociateRequest | AssociateAccept | PData | AssociateReject | Abort | Release:
    made = rng.choice(MAKERS)(rng)
    assert isinstance(
        made, AssociateRequest | AssociateAccept | PData | AssociateReject | Abort | Release
    )
    return made


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randrange(1, 6)):
        what = rng.randrange(5)
        if what == 0 and buf:  # flip a byte
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif what == 1 and buf:  # truncate
            del buf[rng.randrange(len(buf)) :]
        elif what == 2:  # insert random bytes
            at = rng.randrange(len(buf) + 1)
            buf[at:at] = rng.randbytes(rng.randrange(1, 9))
        elif what == 3 and len(buf) > 6:  # make a length field lie (the PDU's or an item's)
            at = rng.randrange(len(buf) - 2)
            buf[at : at + 2] = rng.randbytes(2)
        elif len(buf) >= 6:  # keep the header honest about the (mutated) body
            buf[2:6] = (len(buf) - 6).to_bytes(4, "big")
    return bytes(buf)


def _random_items(rng: random.Random, depth: int = 0) -> bytes:
    """Items of the types the codec reads (and a few others), of random lengths including
    zero, some holding items themselves: the shapes a byte-level mutation rarely reaches."""
    out = b""
    for _ in range(rng.randrange(0, 5)):
        kind = rng.choice([*ItemType, 0x00, 0xFF])
        if depth < 2 and rng.random() < 0.5:
            body = rng.randbytes(rng.choice([0, 4])) + _random_items(rng, depth + 1)
        else:
            body = rng.randbytes(rng.choice([0, 1, 2, 3, 4, 5, 8, rng.randrange(0, 70)]))
        if rng.random() < 0.1:  # a length that lies
            out += bytes([kind, 0]) + rng.randrange(0, 0x10000).to_bytes(2, "big") + body
        else:
            out += bytes([kind, 0]) + len(body).to_bytes(2, "big") + body
    return out


def _only_pdu_errors(decode: Callable[[bytes], object], data: bytes) -> None:
    try:
        decode(data)
    except PduError:
        pass
    except Exception as exc:  # the defect this test exists to find
        pytest.fail(f"{type(exc).__name__}: {exc} for {data[:80].hex()}")


def test_valid_pdus_round_trip() -> None:
    rng = random.Random(SEED)
    for _ in range(CASES):
        pdu = _valid(rng)
        data = pdu.encode()
        assert data[0] in set(PduType)
        assert int.from_bytes(data[2:6], "big") == len(data) - 6
        decoded = decode_pdu(data)
        assert decoded == pdu
        assert decoded.encode() == data


def test_mutated_pdus_raise_only_the_codec_error() -> None:
    rng = random.Random(SEED + 1)
    for _ in range(CASES):
        data = _mutate(rng, _valid(rng).encode())
        _only_pdu_errors(decode_pdu, data)


def test_random_bytes_raise_only_the_codec_error() -> None:
    rng = random.Random(SEED + 2)
    for _ in range(CASES):
        body = rng.randbytes(rng.randrange(0, 200))
        kind = rng.randrange(0, 10)
        honest = bytes([kind, 0]) + len(body).to_bytes(4, "big") + body
        _only_pdu_errors(decode_pdu, honest)
        _only_pdu_errors(decode_pdu, body)
        _only_pdu_errors(lambda b: parse_items(memoryview(b)), body)
        _only_pdu_errors(lambda b: list(iter_pdvs(memoryview(b))), body)
        _only_pdu_errors(dimse.parse_command, body)
        _only_pdu_errors(lambda b: dimse.uid_text(b[:70]), body)


def test_random_items_in_association_pdus_raise_only_the_codec_error() -> None:
    rng = random.Random(SEED + 3)
    for _ in range(CASES):
        kind = rng.choice([PduType.ASSOCIATE_RQ, PduType.ASSOCIATE_AC])
        body = rng.randbytes(68) + _random_items(rng)
        _only_pdu_errors(decode_pdu, bytes([kind, 0]) + len(body).to_bytes(4, "big") + body)


def test_malformed_pdus_are_named_codec_errors() -> None:
    request = AssociateRequest(
        1, ae_titles("US", "THEM"), dimse.APPLICATION_CONTEXT, (), UserInformation()
    )
    data = request.encode()
    with pytest.raises(PduError, match="length"):
        decode_pdu(data + b"\0")  # the header says less than follows
    with pytest.raises(PduError, match="expected an A-ASSOCIATE-RQ"):
        decode_pdu(bytes([1, 0, 0, 0, 0, 4]) + bytes(4))
    with pytest.raises(PduError, match="unknown PDU type 9"):
        decode_pdu(bytes([9, 0, 0, 0, 0, 0]))
    with pytest.raises(PduError, match="truncated"):
        parse_items(memoryview(bytes([0x10, 0, 0, 9, 1, 2])))
    with pytest.raises(PduError, match="PDV length"):
        list(iter_pdvs(memoryview(bytes([0, 0, 0, 1, 1, 3]))))


def test_a_command_is_split_within_the_peers_maximum() -> None:
    command = dimse.encode_command(
        [(dimse.Tag.COMMAND_FIELD, b"\x30\x80")] * 1 + [(0x0900, b"\0\0")]
    )
    pdus = command_pdus(1, command, peer_max_pdu=7 + 6)  # 7 bytes of fragment per PDV
    pdvs = [pdv for pdu in pdus for pdv in decode_pdu(pdu).pdvs]  # type: ignore[union-attr]
    assert all(len(pdu) - 6 <= 13 for pdu in pdus)
    assert b"".join(bytes(p.fragment) for p in pdvs) == command
    assert [p.control for p in pdvs] == [PdvControl.COMMAND] * (len(pdvs) - 1) + [
        PdvControl.COMMAND | PdvControl.LAST
    ]
    with pytest.raises(PduError):
        command_pdus(1, command, peer_max_pdu=6)


def test_pynetdicom_reads_our_accept_and_we_read_its_request() -> None:
    accept = AssociateAccept(
        1,
        ae_titles("UPLOADER", "CTSIM01"),
        dimse.APPLICATION_CONTEXT,
        (
            AcceptedContext(1, ContextResult.ACCEPTANCE, "1.2.840.10008.1.2.1"),
            AcceptedContext(3, ContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED, "1.2.840.10008.1.2"),
        ),
        UserInformation(1 << 20, "2.25.1", "SDU_0"),
    )
    theirs = A_ASSOCIATE_AC()
    theirs.decode(accept.encode())
    assert [(cx.context_id, cx.result) for cx in theirs.presentation_context] == [(1, 0), (3, 3)]
    assert theirs.presentation_context[0].transfer_syntax == "1.2.840.10008.1.2.1"

    primitive = A_ASSOCIATE()
    primitive.application_context_name = dimse.APPLICATION_CONTEXT
    primitive.calling_ae_title = "CTSIM01"
    primitive.called_ae_title = "UPLOADER"
    cx = build_context("1.2.840.10008.5.1.4.1.1.2", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    cx.context_id = 5
    primitive.presentation_context_definition_list = [cx]
    length = MaximumLengthNotification()
    length.maximum_length_received = 16384
    primitive.user_information = [length]
    rq = A_ASSOCIATE_RQ()
    rq.from_primitive(primitive)
    ours = decode_pdu(rq.encode())
    assert isinstance(ours, AssociateRequest)
    assert (ours.called_ae, ours.calling_ae) == ("UPLOADER", "CTSIM01")
    assert ours.contexts == (
        ProposedContext(
            5, "1.2.840.10008.5.1.4.1.1.2", ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
        ),
    )
    assert ours.user.max_pdu_length == 16384
    assert AssociateReject(
        RejectResult.PERMANENT,
        RejectSource.SERVICE_USER,
        UserRejectReason.CALLING_AE_NOT_RECOGNIZED,
    ).encode() == bytes([3, 0, 0, 0, 0, 4, 0, 1, 1, 3])
