"""Where the benchmarks find the original ERNIE reference files (vocab, config, demo shard)."""

import os
from pathlib import Path

REFERENCE = Path(
    os.environ.get(
        "ERNIE_REFERENCE_DIR", Path(__file__).resolve().parents[2] / "shared" / "ernie-reference"
    )
)
