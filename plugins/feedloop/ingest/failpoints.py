"""Named crash points, so tests can SIGKILL the sink at an exact step of its commit protocol.

Set FEEDLOOP_FAILPOINT=<name> in the sink's environment; unset, `hit` is a dictionary lookup.
"""

from __future__ import annotations

import os
import signal

MID_UPLOAD = "mid_upload"              # one object of a flush written, the others not
AFTER_UPLOAD = "after_upload"          # every object written, checkpoint not yet
AFTER_CHECKPOINT = "after_checkpoint"  # checkpoint written, Kafka offsets not committed
AFTER_COMMIT = "after_commit"          # Kafka offsets committed, run manifest not written


def hit(name: str) -> None:
    if os.environ.get("FEEDLOOP_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
