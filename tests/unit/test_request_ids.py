"""New request ids are uuid4s as 32 hex digits (api/request_id.py), as ``uuid.uuid4().hex``."""

from __future__ import annotations

import re
import uuid

from api.request_id import new_id


def test_a_new_id_is_a_random_uuid4_in_32_lowercase_hex_digits() -> None:
    ids = [new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for made in ids:
        assert re.fullmatch(r"[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}", made), made
        parsed = uuid.UUID(hex=made)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert parsed.hex == made
    # Every other hex digit varies: nothing but the version and variant bits is fixed.
    for position in set(range(32)) - {12}:
        assert len({made[position] for made in ids}) > 1, position
