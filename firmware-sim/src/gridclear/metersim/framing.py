"""Modbus TCP and RTU framing: bytes on the wire to a unit id and a PDU, and back. No I/O.

The layer pymodbus calls the framer. The transports (:mod:`.transport`) hand it
what a socket or a serial line delivered and send what it encodes; the request
handler (:mod:`.handling`) sees only unit ids and PDUs.

**Modbus TCP** (*Modbus Messaging on TCP/IP Implementation Guide* v1.0b, 3.1.3):
an MBAP header (transaction id, protocol id, length, unit id), then the PDU. The
length counts the unit id and the PDU, so it is 2..254. A stream carries frames
back to back and a read may end anywhere: :func:`decode_tcp` takes one frame off
the front of a buffer, or says it needs more bytes. A header with a length
outside 2..254 means the stream is not Modbus TCP, and there is no way to find
the next frame in it: :class:`FrameError`, and the connection must go. A frame
with a protocol id other than 0 is well delimited, so it is returned for the
caller to skip.

**Modbus RTU** (*Modbus over serial line* v1.02, 2.5.1): the unit id, the PDU,
and a CRC-16 sent low byte first. Frames are delimited by 3.5 character times
of silence, not by their content, so the line finds a frame's end by timing
(:func:`rtu_timing`) and :func:`decode_rtu` checks one delimited frame. The CRC
is pymodbus's, so ours and a client's cannot disagree.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pymodbus.framer import FramerRTU

from gridclear.metersim.errors import FrameError

__all__ = [
    "RtuFrame",
    "RtuTiming",
    "TcpFrame",
    "crc16",
    "decode_rtu",
    "decode_tcp",
    "encode_rtu",
    "encode_tcp",
    "rtu_timing",
]

_MBAP_HEADER_SIZE = 7  # transaction id, protocol id, length (two bytes each), unit id
_MBAP = struct.Struct(">HHHB")
_MIN_TCP_LENGTH = 2  # unit id + function code
_MAX_TCP_LENGTH = 254  # unit id + the longest PDU (253 bytes)
_MIN_RTU_FRAME = 4  # unit id, function code, CRC


@dataclass(frozen=True, slots=True)
class TcpFrame:
    """One Modbus TCP frame. ``protocol`` is 0 for Modbus; other values are to be skipped."""

    transaction: int
    protocol: int
    unit: int
    pdu: bytes


@dataclass(frozen=True, slots=True)
class RtuFrame:
    """One Modbus RTU frame whose CRC was correct."""

    unit: int
    pdu: bytes


@dataclass(frozen=True, slots=True)
class RtuTiming:
    """A serial line's timing: seconds per character, and the silence that ends a frame."""

    char_time: float
    frame_gap: float


def decode_tcp(buffer: bytes | bytearray) -> tuple[TcpFrame | None, int]:
    """The first frame in ``buffer`` and the number of bytes it took, or ``(None, 0)``
    when the buffer holds only part of one.

    Raises :class:`FrameError` when the header's length is not 2..254: the
    stream is not Modbus TCP. Waits for a whole header plus a function code
    before deciding, as a frame is never shorter.
    """
    if len(buffer) < _MBAP_HEADER_SIZE + 1:
        return None, 0
    transaction, protocol, length, unit = _MBAP.unpack_from(buffer)
    if not _MIN_TCP_LENGTH <= length <= _MAX_TCP_LENGTH:
        raise FrameError(f"MBAP length {length} is not {_MIN_TCP_LENGTH}..{_MAX_TCP_LENGTH}")
    size = _MBAP_HEADER_SIZE - 1 + length
    if len(buffer) < size:
        return None, 0
    return TcpFrame(transaction, protocol, unit, bytes(buffer[_MBAP_HEADER_SIZE:size])), size


def encode_tcp(*, transaction: int, unit: int, pdu: bytes) -> bytes:
    """A Modbus TCP frame (protocol id 0) carrying ``pdu`` for ``unit``."""
    return _MBAP.pack(transaction, 0, len(pdu) + 1, unit) + pdu


def crc16(data: bytes) -> bytes:
    """The Modbus CRC-16 of ``data``, as the two bytes that follow it on the line."""
    return FramerRTU.compute_CRC(data).to_bytes(2, "big")


def decode_rtu(frame: bytes) -> RtuFrame:
    """The unit id and PDU of one delimited RTU frame.

    Raises :class:`FrameError` when it is too short to be a frame or its CRC
    is wrong; on a real line such a frame gets no answer.
    """
    if len(frame) < _MIN_RTU_FRAME:
        raise FrameError(f"an RTU frame of {len(frame)} bytes is too short")
    if crc16(frame[:-2]) != frame[-2:]:
        raise FrameError("RTU frame with a bad CRC")
    return RtuFrame(frame[0], bytes(frame[1:-2]))


def encode_rtu(*, unit: int, pdu: bytes, corrupt_crc: bool = False) -> bytes:
    """An RTU frame carrying ``pdu`` from or to ``unit``.

    ``corrupt_crc`` spoils the CRC on purpose (the ``bad-crc`` fault), so that
    a client must drop the frame.
    """
    body = bytes((unit,)) + pdu
    crc = crc16(body)
    if corrupt_crc:
        crc = bytes((crc[0] ^ 0xFF, crc[1]))
    return body + crc


def rtu_timing(*, baud: int, parity: str, stopbits: int) -> RtuTiming:
    """A line's character time (start bit, 8 data bits, parity, stop bits) and frame gap.

    The gap is 3.5 character times, fixed at 1.75 ms above 19200 baud
    (*Modbus over serial line* v1.02, 2.5.1.1).
    """
    bits = 1 + 8 + (0 if parity == "N" else 1) + stopbits
    char_time = bits / baud
    return RtuTiming(char_time, 3.5 * char_time if baud <= 19200 else 0.00175)
