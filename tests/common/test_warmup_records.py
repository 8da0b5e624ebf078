"""The TensorFlow-free TFRecord reader of warmup files: framing and both CRCs are checked."""

from __future__ import annotations

import struct

import pytest

from common.warmup_records import WarmupRecordError, masked_crc32c, read_records, warmup_path


def _frame(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return (
        length
        + struct.pack("<I", masked_crc32c(length))
        + data
        + struct.pack("<I", masked_crc32c(data))
    )


def test_masked_crc_matches_the_crc32c_check_value():
    # CRC-32C("123456789") is 0xE3069283; a plain CRC-32 or an unmasked value would differ.
    crc = 0xE3069283
    assert masked_crc32c(b"123456789") == ((((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def test_records_come_back_in_order(tmp_path):
    path = tmp_path / "records"
    path.write_bytes(_frame(b"first") + _frame(b"") + _frame(b"third"))
    assert read_records(path) == [b"first", b"", b"third"]


def test_a_flipped_data_byte_fails_the_data_crc(tmp_path):
    path = tmp_path / "records"
    framed = bytearray(_frame(b"payload"))
    framed[12] ^= 1
    path.write_bytes(bytes(framed))
    with pytest.raises(WarmupRecordError, match="corrupted record data at offset 0"):
        read_records(path)


def test_a_flipped_length_byte_fails_the_length_crc(tmp_path):
    path = tmp_path / "records"
    framed = bytearray(_frame(b"ok") + _frame(b"payload"))
    framed[18] ^= 1
    path.write_bytes(bytes(framed))
    with pytest.raises(WarmupRecordError, match="corrupted record length at offset 18"):
        read_records(path)


def test_a_truncated_file_is_refused(tmp_path):
    path = tmp_path / "records"
    path.write_bytes(_frame(b"payload")[:-2])
    with pytest.raises(WarmupRecordError, match="truncated record data"):
        read_records(path)


def test_the_path_is_the_tf_serving_one(tmp_path):
    assert warmup_path(tmp_path) == tmp_path / "assets.extra" / "tf_serving_warmup_requests"
