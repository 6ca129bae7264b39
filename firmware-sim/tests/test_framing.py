"""Modbus TCP and RTU framing, checked against pymodbus's own framers and published CRCs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.framer import FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
    ReadInputRegistersResponse,
    WriteMultipleRegistersRequest,
)

from gridclear.metersim.errors import FrameError
from gridclear.metersim.framing import (
    RtuFrame,
    TcpFrame,
    crc16,
    decode_rtu,
    decode_tcp,
    encode_rtu,
    encode_tcp,
    rtu_timing,
)

units = st.integers(min_value=0, max_value=255)
pdus = st.binary(min_size=1, max_size=253)
transactions = st.integers(min_value=0, max_value=0xFFFF)


def _client_side(framer: type[FramerSocket] | type[FramerRTU]) -> FramerSocket | FramerRTU:
    return framer(DecodePDU(is_server=False))


def _server_side(framer: type[FramerSocket] | type[FramerRTU]) -> FramerSocket | FramerRTU:
    return framer(DecodePDU(is_server=True))


# ------------------------------------------------------------------ Modbus TCP


def test_a_pymodbus_tcp_request_decodes_to_its_transaction_unit_and_pdu() -> None:
    request = ReadInputRegistersRequest(address=0x34, count=2, dev_id=3, transaction_id=0x1234)
    wire = _server_side(FramerSocket).buildFrame(request)
    frame, size = decode_tcp(wire)
    assert size == len(wire)
    assert frame == TcpFrame(0x1234, 0, 3, bytes((0x04,)) + request.encode())


def test_our_tcp_answer_is_what_a_pymodbus_client_reads() -> None:
    answer = encode_tcp(transaction=7, unit=1, pdu=b"\x04\x04\x00\x01\x00\x02")
    expected = ReadInputRegistersResponse(registers=[1, 2], dev_id=1, transaction_id=7)
    assert answer == _server_side(FramerSocket).buildFrame(expected)
    used, decoded = _client_side(FramerSocket).handleFrame(answer, 1, 7)
    assert used == len(answer)
    assert isinstance(decoded, ReadInputRegistersResponse)
    assert decoded.registers == [1, 2]
    assert (decoded.dev_id, decoded.transaction_id) == (1, 7)


@given(transaction=transactions, unit=units, pdu=pdus)
def test_tcp_frames_round_trip_and_match_pymodbus_encoding(
    transaction: int, unit: int, pdu: bytes
) -> None:
    wire = encode_tcp(transaction=transaction, unit=unit, pdu=pdu)
    assert wire == _server_side(FramerSocket).encode(pdu, unit, transaction)
    assert decode_tcp(wire) == (TcpFrame(transaction, 0, unit, pdu), len(wire))


@given(pdu=pdus, cut=st.integers(min_value=0, max_value=260))
def test_a_partial_tcp_frame_waits_for_the_rest(pdu: bytes, cut: int) -> None:
    wire = encode_tcp(transaction=1, unit=1, pdu=pdu)
    prefix = wire[: min(cut, len(wire) - 1)]
    assert decode_tcp(prefix) == (None, 0)
    assert decode_tcp(bytearray(prefix)) == (None, 0)


def test_tcp_frames_back_to_back_come_off_one_at_a_time() -> None:
    first = encode_tcp(transaction=1, unit=1, pdu=b"\x04\x00\x00\x00\x02")
    second = encode_tcp(transaction=2, unit=9, pdu=b"\x03\x9c\x40\x00\x04")
    third = encode_tcp(transaction=3, unit=1, pdu=b"\x04\x00\x00\x00\x50")
    buffer = bytearray(first + second + third[:5])
    seen = []
    while True:
        frame, size = decode_tcp(buffer)
        if frame is None:
            break
        seen.append(frame)
        del buffer[:size]
    assert [(f.transaction, f.unit) for f in seen] == [(1, 1), (2, 9)]
    assert buffer == third[:5]


def test_tcp_bytes_fed_one_at_a_time_give_the_frame_at_the_last_byte() -> None:
    wire = _server_side(FramerSocket).buildFrame(
        WriteMultipleRegistersRequest(address=2, registers=[0, 0x4120], dev_id=5, transaction_id=9)
    )
    buffer = bytearray()
    for byte in wire[:-1]:
        buffer.append(byte)
        assert decode_tcp(buffer) == (None, 0)
    buffer.append(wire[-1])
    frame, size = decode_tcp(buffer)
    assert frame is not None
    assert (frame.transaction, frame.unit, frame.pdu[0], size) == (9, 5, 0x10, len(wire))


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # a web client on the Modbus port
        b"\x00\x01\x00\x00\x00\x00\x01\x04",  # length 0
        b"\x00\x01\x00\x00\x00\x01\x01\x04",  # length 1: a unit id and no function
        b"\x00\x01\x00\x00\x00\xff\x01\x04",  # length 255: longer than any PDU allows
        b"\xff" * 32,
    ],
)
def test_tcp_garbage_is_a_frame_error(garbage: bytes) -> None:
    with pytest.raises(FrameError) as caught:
        decode_tcp(garbage)
    assert caught.value.reason == "bad_frame"


def test_a_tcp_frame_with_another_protocol_id_is_delimited_for_skipping() -> None:
    wire = b"\x00\x05\x00\x01\x00\x03\x01\x04\x00" + encode_tcp(transaction=6, unit=1, pdu=b"\x08")
    frame, size = decode_tcp(wire)
    assert frame == TcpFrame(5, 1, 1, b"\x04\x00")
    assert decode_tcp(wire[size:]) == (TcpFrame(6, 0, 1, b"\x08"), 8)


# ------------------------------------------------------------------ Modbus RTU


def test_crc16_matches_the_published_modbus_check_values() -> None:
    # CRC-16/MODBUS of "123456789" is 0x4B37, sent low byte first.
    assert crc16(b"123456789") == b"\x37\x4b"
    # Read 10 holding registers from unit 1 at 0: the frame every Modbus guide shows.
    assert crc16(bytes.fromhex("01030000000a")) == bytes.fromhex("c5cd")


def test_a_pymodbus_rtu_request_decodes_to_its_unit_and_pdu() -> None:
    request = ReadHoldingRegistersRequest(address=40000, count=4, dev_id=2)
    wire = _server_side(FramerRTU).buildFrame(request)
    assert decode_rtu(wire) == RtuFrame(2, bytes((0x03,)) + request.encode())


def test_our_rtu_answer_is_what_a_pymodbus_client_reads() -> None:
    answer = encode_rtu(unit=1, pdu=b"\x04\x04\x44\x7a\x00\x00")
    used, decoded = _client_side(FramerRTU).handleFrame(answer, 1, 0)
    assert used == len(answer)
    assert isinstance(decoded, ReadInputRegistersResponse)
    assert decoded.registers == [0x447A, 0]


def test_a_corrupted_crc_is_refused_by_us_and_by_pymodbus() -> None:
    answer = encode_rtu(unit=1, pdu=b"\x04\x04\x44\x7a\x00\x00", corrupt_crc=True)
    assert answer[:-2] == encode_rtu(unit=1, pdu=b"\x04\x04\x44\x7a\x00\x00")[:-2]
    with pytest.raises(FrameError):
        decode_rtu(answer)
    _, decoded = _client_side(FramerRTU).handleFrame(answer, 1, 0)
    assert decoded is None


@given(unit=units, pdu=pdus)
def test_rtu_frames_round_trip_and_match_pymodbus_encoding(unit: int, pdu: bytes) -> None:
    wire = encode_rtu(unit=unit, pdu=pdu)
    assert wire == _server_side(FramerRTU).encode(pdu, unit, 0)
    assert decode_rtu(wire) == RtuFrame(unit, pdu)


@given(unit=units, pdu=pdus, data=st.data())
def test_any_one_byte_changed_in_an_rtu_frame_fails_its_crc(
    unit: int, pdu: bytes, data: st.DataObject
) -> None:
    wire = bytearray(encode_rtu(unit=unit, pdu=pdu))
    position = data.draw(st.integers(min_value=0, max_value=len(wire) - 1))
    wire[position] ^= data.draw(st.integers(min_value=1, max_value=255))
    with pytest.raises(FrameError):
        decode_rtu(bytes(wire))


@pytest.mark.parametrize("frame", [b"", b"\x01", b"\x01\x04", b"\x01\x04\x00"])
def test_an_rtu_frame_shorter_than_four_bytes_is_a_frame_error(frame: bytes) -> None:
    with pytest.raises(FrameError):
        decode_rtu(frame)


def test_a_partial_rtu_frame_and_garbage_before_a_frame_fail_the_crc() -> None:
    # The line delimits frames by silence, so a frame cut short or with line noise in
    # front is one bad frame that gets no answer, never a request for someone else.
    wire = encode_rtu(unit=1, pdu=b"\x04\x00\x34\x00\x02")
    for broken in (wire[:-1], wire[:-3], b"\x00\xff" + wire, wire + b"\x55"):
        with pytest.raises(FrameError):
            decode_rtu(broken)


@pytest.mark.parametrize(
    ("baud", "parity", "stopbits", "char_time", "frame_gap"),
    [
        (9600, "N", 1, 10 / 9600, 3.5 * 10 / 9600),
        (9600, "E", 1, 11 / 9600, 3.5 * 11 / 9600),
        (2400, "N", 2, 11 / 2400, 3.5 * 11 / 2400),
        (19200, "N", 1, 10 / 19200, 3.5 * 10 / 19200),
        (38400, "N", 1, 10 / 38400, 0.00175),  # fixed above 19200 baud
    ],
)
def test_rtu_timing_follows_the_serial_line_specification(
    baud: int, parity: str, stopbits: int, char_time: float, frame_gap: float
) -> None:
    timing = rtu_timing(baud=baud, parity=parity, stopbits=stopbits)
    assert timing.char_time == pytest.approx(char_time)
    assert timing.frame_gap == pytest.approx(frame_gap)
