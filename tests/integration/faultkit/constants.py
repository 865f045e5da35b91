"""Numbers that several fault-test modules share."""

PARTITIONS = 6
FAST_POLL_S = 0.05
PROCESS_STOP_TIMEOUT_S = 30.0
