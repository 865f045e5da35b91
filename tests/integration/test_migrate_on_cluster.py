"""test_migrate.py again, on a real local Redis Cluster (cluster_suite.py): the old layout
written there, `devact migrate` scanning every primary and moving each device-month on its
node."""

from .cluster_suite import services  # noqa: F401 - the cluster instead of one Redis
from .test_migrate import *  # noqa: F403 - the same tests, collected again here
