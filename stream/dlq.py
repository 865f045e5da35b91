"""Dead-letter records: the original bytes, the original key, and why, in headers."""

from __future__ import annotations

from dataclasses import dataclass

from stream.model import original_bytes
from stream.plan import DeadLetter


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def to_record(letter: DeadLetter) -> DeadLetterRecord:
    m, r = letter.message, letter.rejection
    headers = [
        ("reason", r.reason.encode()),
        ("detail", r.detail.encode("utf-8", "replace")),
        ("source", f"{m.topic}/{m.partition}/{m.offset}".encode()),
    ]
    if r.field is not None:
        headers.append(("field", r.field.encode()))
    if letter.index is not None:
        headers.append(("element", str(letter.index).encode()))
    return DeadLetterRecord(m.key, original_bytes(m.value, letter.index), headers)
