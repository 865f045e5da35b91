"""test_token_lifecycle.py again, on a real local Redis Cluster (cluster_suite.py)."""

from .cluster_suite import services  # noqa: F401 - the cluster instead of one Redis
from .test_token_lifecycle import *  # noqa: F403 - the same tests, collected again here
