"""Paddle Inference on an exported model (`paddle.inference.create_predictor`).

The GPU when Paddle sees one (TensorRT only when ERNIE_SERVE_TENSORRT=1), else the CPU with
oneDNN and `threads` math threads. A predictor is not thread-safe: the batcher's one thread
runs it (serving/batching.py).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import paddle
from paddle import inference

log = logging.getLogger(__name__)

TENSORRT_ENV = "ERNIE_SERVE_TENSORRT"


class Predictor:
    def __init__(self, prefix: Path, threads: int = 1, gpu: bool | None = None) -> None:
        config = inference.Config(f"{prefix}.json", f"{prefix}.pdiparams")
        gpu = paddle.device.cuda.device_count() > 0 if gpu is None else gpu
        if gpu:
            config.enable_use_gpu(256, 0)
            if os.environ.get(TENSORRT_ENV) == "1":
                config.enable_tensorrt_engine(precision_mode=inference.PrecisionType.Float32)
        else:
            config.disable_gpu()
            config.enable_mkldnn()
            config.set_cpu_math_library_num_threads(threads)
        config.disable_glog_info()
        self.device = "gpu" if gpu else "cpu"
        self.predictor = inference.create_predictor(config)
        self.input_names = list(self.predictor.get_input_names())
        self.output_names = list(self.predictor.get_output_names())
        log.info("predictor %s on the %s: inputs %s", prefix.name, self.device, self.input_names)

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs in the export's order for inputs by name (all of them)."""
        for name in self.input_names:
            handle = self.predictor.get_input_handle(name)
            handle.reshape(list(inputs[name].shape))
            handle.copy_from_cpu(np.ascontiguousarray(inputs[name]))
        self.predictor.run()
        return [self.predictor.get_output_handle(n).copy_to_cpu() for n in self.output_names]
