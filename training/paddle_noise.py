"""Paddle's C++ log lines that are noise in a job's log, dropped where they are written.

paddle.jit.save logs "Paddle static graph(PIR) not support input out tensor for now!!!!!"
(a glog warning from eager_utils.cc) for every softmax or exp it traces: Paddle 3.3's
functional API passes an `out` argument that PIR ignores. The export is right; the line
only opens every job's log with a scare. glog writes to file descriptor 2 itself, so the
block's stderr is caught at that descriptor and written back without those lines.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

NOISE = ("Paddle static graph(PIR) not support input out tensor for now",)


@contextlib.contextmanager
def without_paddle_noise() -> Iterator[None]:
    """Whatever the block writes to stderr (Python's or C++'s) reaches it after the block,
    in order, less the NOISE lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            for line in caught.read().decode("utf-8", "replace").splitlines(keepends=True):
                if not any(noise in line for noise in NOISE):
                    sys.stderr.write(line)
            sys.stderr.flush()
