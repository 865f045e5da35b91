"""Where ``new_writer`` was found before the write path had one writer over two transports:
importers that still look here (stream/app.py, stream/replay.py, bench/) get the same function.
The writer is ``state/writer.py``; the cluster's part of it is ``state/cluster_transport.py``."""

from __future__ import annotations

from state.writer import new_writer

__all__ = ["new_writer"]
