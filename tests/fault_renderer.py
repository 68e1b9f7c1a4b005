"""`faultcard`: the testcard, with faults a test injects from outside the worker's processes.

A worker registers it by name like any renderer of one's own (agent/config.py):

    AVATAR_RENDERERS=faultcard=tests.fault_renderer:FaultcardRenderer AVATAR_RENDERER=faultcard

Its avatar source may be a directory (an avatar package in the catalog, so a session picks it
with `avatar_id`). While that directory holds a file named `fault`, every render call reads it
and fails as it says:

* `raise`: the call raises;
* `hang`: the call blocks until the file says something else or is removed.

With no such file, or any other source, it is the plain testcard. So one session on a worker
can be broken while the others on the same worker are not, with no mock anywhere: the worker,
its job processes and the runtime are the real ones.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from renderers import FrameRequest, VideoFormat
from renderers.testcard import TestcardRenderer

FAULT_FILE = "fault"
RAISE = "raise"
HANG = "hang"
_POLL_S = 0.05


def set_fault(package: Path, fault: str | None) -> None:
    """Break (RAISE, HANG) or mend (None) every session showing avatar package `package`."""
    path = package / FAULT_FILE
    if fault is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(fault)


class FaultcardRenderer(TestcardRenderer):
    __test__ = False

    name = "faultcard"

    def __init__(self, video: VideoFormat) -> None:
        super().__init__(video)
        self._fault_file: Path | None = None

    def load(self, source: Path | None) -> None:
        super().load(source)
        if source is not None and source.is_dir():
            self._fault_file = source / FAULT_FILE

    def render(self, requests: Sequence[FrameRequest]) -> list[np.ndarray]:
        fault = self._fault()
        while fault == HANG:
            time.sleep(_POLL_S)
            fault = self._fault()
        if fault == RAISE:
            raise RuntimeError("injected fault")
        return super().render(requests)

    def _fault(self) -> str | None:
        if self._fault_file is None:
            return None
        try:
            return self._fault_file.read_text().strip()
        except OSError:
            return None
