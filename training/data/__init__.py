"""Pretraining data: filelists, shard parsing, masking, batching and the worker pipeline.

Nothing here imports paddle: it also runs in light worker processes.
"""

from ernie_sm.contract.filelist import Shard, read_filelist
from ernie_sm.training.data.batching import (
    Batch,
    BatchConfig,
    group_batches,
    make_batch,
    split_batches,
)
from ernie_sm.training.data.masking import TokenIds, mask_tokens
from ernie_sm.training.data.pipeline import (
    DataPosition,
    PretrainingData,
    ReadConfig,
    ShardBatches,
    ShardTask,
    epoch_shards,
    load_shard_batches,
    validation_batches,
)
from ernie_sm.training.data.shard import FIELDS, ParsedShard, ShardLimits, parse_shard

__all__ = [
    "FIELDS",
    "Batch",
    "BatchConfig",
    "DataPosition",
    "ParsedShard",
    "PretrainingData",
    "ReadConfig",
    "Shard",
    "ShardBatches",
    "ShardLimits",
    "ShardTask",
    "TokenIds",
    "epoch_shards",
    "group_batches",
    "load_shard_batches",
    "make_batch",
    "mask_tokens",
    "parse_shard",
    "read_filelist",
    "split_batches",
    "validation_batches",
]
