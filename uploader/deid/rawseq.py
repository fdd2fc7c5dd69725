"""De-identify a sequence in its bytes, without building pydicom data sets for its items.

An RTSTRUCT holds a contour sequence of thousands of items, each a few numbers and a referenced
image's UIDs: building, walking and writing a pydicom data set per item costs ~80 us each, most of
an RTSTRUCT's time. When every element of every item is one whose action needs no judgement of
its value beyond what is done here (kept numbers and binary, remapped UIDs, removed elements,
kept text the cleaner has nothing to strike in, nested sequences of the same), the sequence is
rewritten in one pass over its bytes, with defined lengths. Anything else (a private element, a
VR of UN, a code, text with something to strike, non-ASCII text, a date to shift, an element to
empty or dummy, implicit VR, big endian) answers ``None``, and the caller walks the sequence with
pydicom as before. The verifier reads the result as pydicom parses it, like any other output.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from uploader.deid.elements import MAX_DEPTH, STANDARD_VRS, binary_in_disguise
from uploader.deid.profile import Op

_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)
#: Values held as bytes, not characters (numbers in binary, and binary).
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
_BYTES_VRS = _BINARY_VRS | {"AT", "FD", "FL", "SL", "SS", "SV", "UL", "US", "UV"}
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_TAG = struct.Struct("<HH")


class FallbackError(Exception):
    """The sequence needs pydicom's walk."""


#: (tag, VR, path) -> the action (the engine's decision).
Decide = Callable[[int, str, tuple[int, ...]], Op]
#: (tag, VR, text) -> whether kept text may stay exactly as it is.
TextOk = Callable[[int, str, str], bool]
#: (tag, value) -> the remapped UID.
Remap = Callable[[int, str], str]


class Rewriter:
    """One instance's rewriting: its decisions, its cleaner's quick check and its UID map."""

    def __init__(self, decide: Decide, text_ok: TextOk, remap: Remap, formed: TextOk) -> None:
        self.decide, self.text_ok, self.remap, self.formed = decide, text_ok, remap, formed

    def sequence(self, data: bytes, path: tuple[int, ...]) -> bytes:
        """The de-identified value of a defined-length sequence (explicit VR little endian).

        Raises:
            FallbackError: something in it needs pydicom's walk.
        """
        return self._items(data, 0, len(data), path)[0]

    def _items(
        self, data: bytes, pos: int, end: int | None, path: tuple[int, ...]
    ) -> tuple[bytes, int]:
        """A sequence's items from ``pos``, with defined lengths; ``end`` None: up to its
        delimiter. Returns the items and the offset after them."""
        if len(path) > MAX_DEPTH:
            raise FallbackError  # the engine's walk refuses it
        out = bytearray()
        while end is None or pos < end:
            tag, length, pos = self._item_header(data, pos)
            if end is None and tag == _SEQ_END:
                break
            if tag != _ITEM:
                raise FallbackError
            if length == _UNDEFINED:
                body, pos = self._dataset(data, pos, None, path)
            else:
                stop = pos + length
                if stop > len(data):
                    raise FallbackError
                body, pos = self._dataset(data, pos, stop, path)
            out += _TAG.pack(0xFFFE, 0xE000) + _U32.pack(len(body)) + body
        return bytes(out), pos

    @staticmethod
    def _item_header(data: bytes, pos: int) -> tuple[int, int, int]:
        if pos + 8 > len(data):
            raise FallbackError
        group, elem = _TAG.unpack_from(data, pos)
        return group << 16 | elem, _U32.unpack_from(data, pos + 4)[0], pos + 8

    def _dataset(
        self, data: bytes, pos: int, end: int | None, path: tuple[int, ...]
    ) -> tuple[bytes, int]:
        """One item's elements, rewritten; ``end`` None: up to its delimiter."""
        out = bytearray()
        last = -1
        while end is None or pos < end:
            if pos + 8 > len(data):
                raise FallbackError
            group, elem_no = _TAG.unpack_from(data, pos)
            tag = group << 16 | elem_no
            if tag == _ITEM_END:
                if end is not None:
                    raise FallbackError
                return bytes(out), pos + 8
            if tag <= last or group == 0xFFFE:
                raise FallbackError  # out of order, or a delimiter where an element belongs
            last = tag
            vr, length, start = _element_header(data, pos)
            if group & 1:
                raise FallbackError  # private elements: pydicom's walk decides
            if length == _UNDEFINED:
                if vr != "SQ" or self.decide(tag, vr, path) is not Op.RECURSE:
                    raise FallbackError
                value, pos = self._items(data, start, None, (*path, tag))
                out += _element(tag, vr, value)
                continue
            stop = start + length
            if stop > len(data) or (end is not None and stop > end):
                raise FallbackError
            pos = stop
            if elem_no == 0 or 0x5000 <= group <= 0x501E or 0x6000 <= group <= 0x601E:
                continue  # group lengths (recomputed), curves and overlays: as the walk does
            kept = self._value(tag, vr, data[start:stop], path)
            if kept is not None:
                out += _element(tag, vr, kept)
        if pos != end:
            raise FallbackError
        return bytes(out), pos

    def _value(self, tag: int, vr: str, value: bytes, path: tuple[int, ...]) -> bytes | None:
        """The element's new value, or None to remove it."""
        if binary_in_disguise(tag, vr):
            raise FallbackError  # the engine's walk removes it
        op = self.decide(tag, vr, path)
        if op is Op.REMOVE:
            return None
        if vr == "SQ":
            if op is not Op.RECURSE:
                raise FallbackError
            return self.sequence(value, (*path, tag))
        if op is Op.UID:
            if not value.isascii():
                raise FallbackError
            parts = [p.strip(" \x00") for p in value.decode("ascii").split("\\")]
            new = "\\".join(self.remap(tag, p) for p in parts if p).encode("ascii")
            return new + b"\x00" if len(new) % 2 else new
        if vr in _BYTES_VRS:  # numbers and binary in bytes: kept as they are, or gone
            if op is Op.KEEP:
                return value
            if op is Op.CLEAN and vr in _BINARY_VRS:
                return None  # binary cannot be cleaned: it goes
            raise FallbackError
        if op not in (Op.KEEP, Op.CLEAN):
            raise FallbackError  # empty, dummy, shift: pydicom's walk does them
        if not value.isascii() or b"\x1b" in value:
            raise FallbackError  # a character set to honour
        text = value.decode("ascii")
        if not self.formed(tag, vr, text) or not self.text_ok(tag, vr, text):
            raise FallbackError
        return value


def _element_header(data: bytes, pos: int) -> tuple[str, int, int]:
    """VR, value length and value offset of the element at ``pos`` (its tag already read)."""
    raw_vr = data[pos + 4 : pos + 6]
    if not (65 <= raw_vr[0] <= 90 and 65 <= raw_vr[1] <= 90):
        raise FallbackError
    vr = raw_vr.decode("ascii")
    if vr == "UN" or vr not in STANDARD_VRS:
        raise FallbackError  # unknown VRs: pydicom's walk decides
    if vr in _LONG_VRS:
        if pos + 12 > len(data):
            raise FallbackError
        return vr, _U32.unpack_from(data, pos + 8)[0], pos + 12
    return vr, _U16.unpack_from(data, pos + 6)[0], pos + 8


def _element(tag: int, vr: str, value: bytes) -> bytes:
    head = _TAG.pack(tag >> 16, tag & 0xFFFF) + vr.encode("ascii")
    if vr in _LONG_VRS:
        return head + b"\x00\x00" + _U32.pack(len(value)) + value
    if len(value) > 0xFFFF:
        raise FallbackError
    return head + _U16.pack(len(value)) + value
