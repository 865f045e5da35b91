"""Test shim (tests/integration/test_unreadable.py): on PYTHONPATH, it makes a process a build
that lacks the snappy codec for as long as the file named by DEVACT_TEST_SNAPPY_MISSING_WHILE
exists; removing the file is the upgrade that brings the codec."""

import os

_flag = os.environ.get("DEVACT_TEST_SNAPPY_MISSING_WHILE")
if _flag:
    import aiokafka.codec as _codec

    _has_snappy = _codec.has_snappy

    def _snappy_unless_flagged() -> bool:
        return not os.path.exists(str(_flag)) and _has_snappy()

    _codec.has_snappy = _snappy_unless_flagged
