"""A job's log carries what Paddle says that matters, not its known noise. Paddle logs the
PIR warning once a process, so each case runs in a fresh one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXPORT = """
import os, sys, paddle
from paddle.static import InputSpec
from ernie_sm.training.paddle_noise import without_paddle_noise

class Softmax(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.linear = paddle.nn.Linear(4, 4)

    def forward(self, x):
        return paddle.nn.functional.softmax(self.linear(x), axis=-1)

def export():
    spec = [InputSpec([None, 4], "float32", "x")]
    paddle.jit.save(Softmax(), sys.argv[2], input_spec=spec)

if sys.argv[1] == "quiet":
    with without_paddle_noise():
        export()
        os.write(2, b"a real warning\\n")
else:
    export()
"""


def _stderr(how: str, prefix: Path) -> str:
    script = prefix.parent.parent / "export.py"  # a file: tracing reads forward's source
    script.write_text(EXPORT)
    run = subprocess.run(
        [sys.executable, str(script), how, str(prefix)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    return run.stderr


def test_the_pir_warning_of_an_export_is_dropped_and_the_rest_kept(tmp_path):
    assert "not support input out tensor" in _stderr("plain", tmp_path / "plain" / "m")
    quiet = _stderr("quiet", tmp_path / "quiet" / "m")
    assert "not support input out tensor" not in quiet
    assert quiet.endswith("a real warning\n")
    assert (tmp_path / "quiet" / "m.pdiparams").is_file()  # exported all the same
