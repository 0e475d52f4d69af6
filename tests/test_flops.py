"""Model FLOPs against a count by hand, and the dense peaks MFU is measured against."""

from __future__ import annotations

import inspect

import pytest
from ernie_sm.training import flops
from ernie_sm.training.config import ErnieConfig

TINY = ErnieConfig(vocab_size=50, hidden_size=8, num_hidden_layers=2, num_attention_heads=2)


def test_training_flops_of_a_tiny_config_match_a_count_by_hand():
    # 3 rows padded to 5 tokens (15 positions), hidden 8, 2 heads of 4, feed-forward 32,
    # 4 masked positions, vocab 50, NSP on 3 rows. A multiply-add is 2 FLOPs.
    query = key = value = 2 * 15 * 8 * 8  # 1,920 each
    scores = 2 * 3 * 2 * (5 * 5 * 4)  # rows x heads x [5,4]@[4,5]: 1,200
    weighted = 2 * 3 * 2 * (5 * 5 * 4)  # rows x heads x [5,5]@[5,4]: 1,200
    attention_out = 2 * 15 * 8 * 8  # 1,920
    ffn_in = 2 * 15 * 8 * 32  # 7,680
    ffn_out = 2 * 15 * 32 * 8  # 7,680
    layer = query + key + value + scores + weighted + attention_out + ffn_in + ffn_out
    assert layer == 25_440
    pooler = 2 * 3 * 8 * 8  # 384
    mlm_transform = 2 * 4 * 8 * 8  # 512, masked positions only
    mlm_vocab = 2 * 4 * 8 * 50  # 3,200
    nsp = 2 * 3 * 8 * 2  # 96
    forward = 2 * layer + pooler + mlm_transform + mlm_vocab + nsp
    assert forward == 55_072
    nsp_head = flops.Matmul(rows=3, in_features=8, out_features=2)
    assert flops.training_flops(TINY, 3, 5, 4, [nsp_head]) == 3 * forward  # + backward (2x)


def test_attention_grows_with_the_padded_length_and_mlm_with_the_masked_positions():
    base = flops.training_flops(TINY, 3, 5, 4)
    assert flops.training_flops(TINY, 3, 5, 0) == base - 3 * (2 * 4 * 8 * 8 + 2 * 4 * 8 * 50)
    longer = flops.training_flops(TINY, 3, 10, 4)  # padded to 10: 15 more positions
    per_position = 2 * 8 * (3 * 8 + 8 + 32 + 32)  # q k v, output, feed-forward in and out
    linear = 15 * per_position * 2  # 2 layers
    quadratic = 2 * (2 * 2 * 3 * (10 * 10 - 5 * 5) * 8)  # scores and weighting, 2 layers
    assert longer - base == 3 * (linear + quadratic)
    token_head = flops.Matmul(rows=15, in_features=8, out_features=2)  # a per-token head
    assert flops.training_flops(TINY, 3, 5, 4, [token_head]) == base + 3 * 2 * 15 * 8 * 2


@pytest.mark.parametrize(
    ("name", "precision", "peak"),
    [
        ("NVIDIA A100-SXM4-40GB", "bfloat16", 312e12),
        ("NVIDIA A100-SXM4-80GB", "float32", 156e12),  # TF32
        ("NVIDIA H100 80GB HBM3", "float16", 989.5e12),
        ("NVIDIA H200", "bfloat16", 989.5e12),
        ("NVIDIA B200", "bfloat16", 2.25e15),
        ("Tesla V100-SXM2-16GB", "float16", 125e12),
        ("Tesla T4", "float16", 65e12),
        ("NVIDIA A10G", "bfloat16", 125e12),
        ("NVIDIA L4", "bfloat16", 121e12),
        ("NVIDIA L40S", "bfloat16", 362.05e12),
    ],
)
def test_peaks_of_sagemakers_gpus_by_their_cuda_names(name, precision, peak):
    assert flops.peak_flops(name, precision) == peak


@pytest.mark.parametrize(
    ("name", "precision"),
    [
        (None, "float32"),  # CPU
        ("Tesla V100-SXM2-16GB", "bfloat16"),  # no bfloat16 tensor cores
        ("Tesla T4", "bfloat16"),
        ("NVIDIA H100 PCIe", "bfloat16"),  # another board, another peak
        ("NVIDIA GeForce RTX 4090", "float16"),
    ],
)
def test_no_peak_where_none_is_known(name, precision):
    assert flops.peak_flops(name, precision) is None


def test_every_peak_cites_its_datasheet_and_is_dense():
    source = inspect.getsource(flops)
    comments = [line for line in source.splitlines() if line.strip().startswith("#")]
    for gpu, peaks in flops.PEAKS.items():
        assert any(gpu in c and "datasheet" in c for c in comments), gpu
        assert {"float32", "float16"} <= set(peaks)
        assert peaks.get("bfloat16", peaks["float16"]) == peaks["float16"]  # the same units


def test_utilisation_is_left_out_rather_than_zero():
    assert flops.utilisation(156e12, 312e12) == 0.5
    assert flops.utilisation(156e12, None) is None
    assert flops.utilisation(0.0, 312e12) is None
