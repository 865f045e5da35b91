"""Reading the fleet aggregates' binary values (state/fleet.py) against brute force."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from state.fleet import activity_totals, distinct_users

FILLER = b"\0" * 80  # what apply_client.lua stores under the field '~'


def _records(device: int, users: dict[int, int]) -> bytes:
    return b"".join(struct.pack("<I", device) + struct.pack(">q", u) + struct.pack("<I", days)
                    for u, days in users.items())  # fmt: skip


months_strategy = st.lists(
    st.tuples(
        st.dictionaries(
            st.integers(0, 40),  # device index
            st.dictionaries(
                st.integers(-(2**63), 2**63 - 1) | st.sampled_from([-1, 0, 7]),  # users repeat
                st.integers(1, 2**31 - 1),  # days of the month
                min_size=1,
                max_size=6,
            ),
            max_size=12,
        ),
        st.integers(0, 2**31 - 1),  # the range's days in that month
    ),
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(months=months_strategy)
def test_distinct_users_counts_each_device_user_pair_once_over_the_range(
    months: list[tuple[dict[int, dict[int, int]], int]],
) -> None:
    size = 45
    expected = [set() for _ in range(size)]  # type: list[set[int]]
    for devices, mask in months:
        for device, users in devices.items():
            expected[device] |= {u for u, days in users.items() if days & mask}
    values = [
        ([_records(d, users) for d, users in devices.items()] + [FILLER], mask)
        for devices, mask in months
    ]
    assert list(distinct_users(values, size)) == [len(users) for users in expected]


@settings(max_examples=200, deadline=None)
@given(
    vectors=st.lists(
        st.none()
        | st.lists(st.integers(0, 2**40), max_size=30).map(
            lambda xs: b"".join(struct.pack(">q", x) for x in xs)
        ),
        max_size=10,
    ),
    size=st.integers(0, 35),
)
def test_activity_totals_sum_the_vectors_by_index(vectors: list[bytes | None], size: int) -> None:
    expected = [0] * size
    for vector in vectors:
        for i in range(min(size, len(vector or b"") // 8)):
            expected[i] += struct.unpack_from(">q", vector or b"", 8 * i)[0]
    assert list(activity_totals(vectors, size)) == expected
