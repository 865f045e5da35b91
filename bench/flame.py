"""Flame graphs of a process under the bench's load (py-spy, SVG), so that the next person sees
where the time goes without setting up a profiler.

A profiled pass is a pass of its own: its figures are never reported, since sampling stops the
process for each sample (py-spy's default: without it, a stack read while it changes may come
out torn) and takes CPU from a two-core machine.
"""

from __future__ import annotations

import logging
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.common import VENV_BIN

log = logging.getLogger(__name__)

RATE_HZ = 200
"""Samples a second: a few thousand stacks in a pass of tens of seconds."""
_STOP_TIMEOUT_S = 60.0
"""How long py-spy may take to write the graph once told to stop."""


@contextmanager
def flame_graph(pid: int, out: Path) -> Iterator[None]:
    """Sample every Python thread of ``pid`` while the block runs, and write the flame graph to
    ``out``; a profiler that fails is logged, never raised, since the
    graph is an aid and the run's figures do not depend on it."""
    spy = shutil.which("py-spy", path=str(VENV_BIN)) or shutil.which("py-spy")
    if spy is None:
        log.warning("flame graph of %d not made: py-spy is not installed", pid)
        yield
        return
    # --subprocesses: a server's workers too (granian's are children of the process started).
    argv = [spy, "record", "--pid", str(pid), "--rate", str(RATE_HZ), "--subprocesses"]
    argv += ["--format", "flamegraph", "--output", str(out)]
    spying = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield
    finally:
        spying.send_signal(signal.SIGINT)  # py-spy writes the graph when interrupted
        try:
            _, errors = spying.communicate(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            spying.kill()
            _, errors = spying.communicate()
        if not out.exists():
            log.warning("flame graph of %d not made: %s", pid, errors.decode(errors="replace"))
        else:
            out.write_text(_XML_INVALID.sub("\ufffd", out.read_text(errors="replace")))


_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")
"""Characters XML 1.0 forbids, which a frame's name may hold (a byte read from the process's
memory): a browser stops drawing an SVG at the first one."""
