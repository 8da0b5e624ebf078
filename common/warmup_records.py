"""The warmup-record file of a SavedModel version: where it lives and its TFRecord framing.

Export writes `assets.extra/tf_serving_warmup_requests`; the server replays it and the rollout
reads its inputs as golden items. This module is the one place that names the file and reads its
framing. It returns raw record bytes (each a serialized `tensorflow.serving.PredictionLog`), so it
needs neither TensorFlow nor the TF Serving protos; callers parse the records.

    records = read_records(warmup_path(version_dir))
"""

from __future__ import annotations

import struct
from pathlib import Path

WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
# `saved_model_warmup_util.h` WarmupConsts::kMaxNumRecords: TF Serving refuses more than this.
MAX_WARMUP_RECORDS = 1000

_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8


class WarmupRecordError(ValueError):
    """The file is not valid TFRecord framing: truncated, or a CRC does not match."""


def warmup_path(version_dir: str | Path) -> Path:
    """`version_dir/assets.extra/tf_serving_warmup_requests`."""
    return Path(version_dir) / WARMUP_DIR / WARMUP_FILE


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C: the checksum rotated right by 15 bits plus a constant."""
    import google_crc32c  # imported on use: only readers of warmup files need it

    crc = google_crc32c.value(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def read_records(path: str | Path) -> list[bytes]:
    """The records of a TFRecord file, with both CRCs of every record checked.

    Each record is: length (u64 little-endian), masked CRC-32C of those 8 bytes, the data, masked
    CRC-32C of the data.

    Args:
        path: The TFRecord file.

    Returns:
        The data of each record, in file order.

    Raises:
        WarmupRecordError: the file ends inside a record, or a CRC does not match.
    """
    records = []
    with Path(path).open("rb") as handle:
        offset = 0
        while header := handle.read(12):
            if len(header) < 12:
                raise WarmupRecordError(f"truncated record header at offset {offset} in {path}")
            (length,) = _LENGTH.unpack_from(header)
            (length_crc,) = _CRC.unpack_from(header, 8)
            if masked_crc32c(header[:8]) != length_crc:
                raise WarmupRecordError(f"corrupted record length at offset {offset} in {path}")
            data = handle.read(length)
            footer = handle.read(4)
            if len(data) < length or len(footer) < 4:
                raise WarmupRecordError(f"truncated record data at offset {offset} in {path}")
            if masked_crc32c(data) != _CRC.unpack(footer)[0]:
                raise WarmupRecordError(f"corrupted record data at offset {offset} in {path}")
            records.append(data)
            offset += 16 + length
    return records
