"""Training throughput of the real entrypoint (`ernie-sm train`) on ERNIE 1.0 data.

The data is the demo corpus prepared with the ERNIE 1.0 vocab (lines of up to 128
tokens, like the original release's demo shard).

Runs a short job per model config and prints what the trainer itself logs for its last
logging window (the first holds start-up and first allocations): tokens/s, padding
efficiency (real / padded tokens), model TFLOP/s and, on a GPU of training/flops.py's
table, MFU. On a machine with a GPU the same script measures the GPU (use_cuda
defaults to true).

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
from dataclasses import dataclass
from pathlib import Path

from demo_data import demo_dataset  # benchmarks/demo_data.py
from ernie_sm.contract import channels, hyperparams
from ernie_sm.training import layout

TOKENS_PER_SEC = re.compile(r"\[train\] step=\d+ .*tokens_per_sec=([0-9.]+)")
USAGE = re.compile(r"\[flops\] .*flops_per_sec=(\S+) padding_efficiency=(\S+)(?: mfu=(\S+))?")
DEVICE = re.compile(r"MFU (?:against the dense \S+ peak of (.+): |not logged: .* for (\S+))")


@dataclass(frozen=True)
class Result:
    device: str
    tokens_per_sec: float
    padding_efficiency: float
    tflops: float
    mfu: float | None


def measure(
    data: Path, config: str, steps: int, batch_size: int, use_fp16: bool, bucket_window: int
) -> Result:
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
            "bucket_window": str(bucket_window),
        }
        layout.write_local_job(base, hyperparameters, [channels.TRAIN])
        env = {**os.environ, layout.BASE_DIR_ENV: str(base)}
        out = subprocess.run(
            [sys.executable, "-m", "ernie_sm.cli", "train"],
            env=env,
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise SystemExit(f"{config}: training failed\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
        rate = TOKENS_PER_SEC.findall(out.stdout)[-1]
        flops_per_sec, padding, mfu = USAGE.findall(out.stdout)[-1]
        device = DEVICE.search(out.stdout)
        return Result(
            device=(device.group(1) or device.group(2)) if device else "?",
            tokens_per_sec=float(rate),
            padding_efficiency=float(padding),
            tflops=float(flops_per_sec) / 1e12,
            mfu=float(mfu) if mfu else None,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["ernie-tiny", "ernie-1.0-base"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4096, help="tokens per batch")
    parser.add_argument("--fp16", action="store_true", help="mixed precision (GPU only)")
    parser.add_argument(
        "--bucket-window",
        type=int,
        default=int(hyperparams.SPECS["bucket_window"].default),
        help="length bucketing window in batches (0: the original order)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        data = demo_dataset(Path(folder), 2.5, 128, 6000)
        print(
            f"{'config':16} {'device':24} {'batch tokens':>12} {'tokens/s':>10} "
            f"{'padding eff.':>12} {'TFLOP/s':>9} {'MFU':>7}"
        )
        for config in args.configs:
            r = measure(data, config, args.steps, args.batch_size, args.fp16, args.bucket_window)
            mfu = f"{r.mfu:7.1%}" if r.mfu is not None else f"{'n/a':>7}"
            print(
                f"{config:16} {r.device:24} {args.batch_size:12d} {r.tokens_per_sec:10.0f} "
                f"{r.padding_efficiency:12.3f} {r.tflops:9.4f} {mfu}",
                flush=True,
            )


if __name__ == "__main__":
    main()
