"""Training throughput of the real entrypoint (`ernie-sm train`) on ERNIE 1.0 data.

The data is the demo corpus prepared with the ERNIE 1.0 vocab (lines of up to 128
tokens, like the original release's demo shard).

Runs a short job per model config and prints the tokens/s the trainer itself logs,
skipping the first logging window (start-up, first allocations). On a machine with a
GPU the same script measures the GPU (use_cuda defaults to true).

    python benchmarks/bench_train.py [--configs ernie-tiny ernie-1.0-base] [--steps 20]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from demo_data import demo_dataset  # benchmarks/demo_data.py
from ernie_sm.training import layout

TOKENS_PER_SEC = re.compile(r"\[train\] step=(\d+) .*tokens_per_sec=([0-9.]+)")


def measure(
    data: Path, config: str, steps: int, batch_size: int, use_fp16: bool
) -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        shutil.copytree(data, base / "input" / "data" / "train")
        hyperparameters = {
            "ernie_config_path": config,
            "batch_size": str(batch_size),
            "max_seq_len": "512",
            "num_train_steps": str(steps),
            "warmup_steps": "0",
            "skip_steps": str(steps // 2),
            "save_steps": str(10 * steps),
            "use_fp16": str(use_fp16).lower(),
            "num_workers": "1",
        }
        layout.write_local_job(base, hyperparameters, [layout.TRAIN])
        env = {**os.environ, layout.BASE_DIR_ENV: str(base)}
        out = subprocess.run(
            [sys.executable, "-m", "ernie_sm.cli", "train"],
            env=env,
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise SystemExit(f"{config}: training failed\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
        windows = [float(m.group(2)) for m in TOKENS_PER_SEC.finditer(out.stdout)]
        device = re.search(r"training from step 0 of \d+ on (\S+)", out.stdout)
        return windows[-1], device.group(1) if device else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["ernie-tiny", "ernie-1.0-base"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4096, help="tokens per batch")
    parser.add_argument("--fp16", action="store_true", help="mixed precision (GPU only)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        data = demo_dataset(Path(folder), 2.5, 128, 6000)
        print(f"{'config':16} {'device':8} {'batch tokens':>12} {'tokens/s':>12}")
        for config in args.configs:
            rate, device = measure(data, config, args.steps, args.batch_size, args.fp16)
            print(f"{config:16} {device:8} {args.batch_size:12d} {rate:12.0f}", flush=True)


if __name__ == "__main__":
    main()
