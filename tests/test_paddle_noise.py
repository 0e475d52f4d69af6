"""A job's log carries what Paddle says that matters, not its known noise."""

from __future__ import annotations

import os

import paddle
from ernie_sm.training.paddle_noise import without_paddle_noise
from paddle.static import InputSpec


class _Softmax(paddle.nn.Layer):
    def __init__(self) -> None:
        super().__init__()
        self.linear = paddle.nn.Linear(4, 4)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return paddle.nn.functional.softmax(self.linear(x), axis=-1)


def test_the_pir_warning_of_an_export_is_dropped_and_the_rest_kept(tmp_path, capfd):
    spec = [InputSpec([None, 4], "float32", "x")]
    paddle.jit.save(_Softmax(), str(tmp_path / "plain" / "m"), input_spec=spec)
    assert "not support input out tensor" in capfd.readouterr().err  # what Paddle 3.3 logs
    with without_paddle_noise():
        paddle.jit.save(_Softmax(), str(tmp_path / "quiet" / "m"), input_spec=spec)
        os.write(2, b"a real warning\n")
    err = capfd.readouterr().err
    assert "not support input out tensor" not in err
    assert err.endswith("a real warning\n")
    assert (tmp_path / "quiet" / "m.pdiparams").is_file()  # exported all the same
