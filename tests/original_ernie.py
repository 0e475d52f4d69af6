"""The original ERNIE 1.0 graph, read from PaddlePaddle/ERNIE's ernie/model/ernie_v1.py and
transformer_encoder.py and written again in numpy (float64), with the variable names that
graph gives its parameters; and a writer of its release format (one PaddlePaddle 1.x
variable file per parameter, written by Paddle's own `save_vars`).

It is the reference the import of the original form is checked against: nothing here comes
from this project's model or its name tables.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

LAYER_NORM_EPS = 1e-5  # fluid.layers.layer_norm's default


def shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Every parameter of ErnieModel + get_pretraining_output (weight sharing on)."""
    h, v = config["hidden_size"], config["vocab_size"]
    out: dict[str, tuple[int, ...]] = {
        "word_embedding": (v, h),
        "pos_embedding": (config["max_position_embeddings"], h),
        "sent_embedding": (config["type_vocab_size"], h),
        "pre_encoder_layer_norm_scale": (h,),
        "pre_encoder_layer_norm_bias": (h,),
    }
    for i in range(config["num_hidden_layers"]):
        layer = f"encoder_layer_{i}"
        for fc, (n_in, n_out) in {
            "multi_head_att_query_fc": (h, h),
            "multi_head_att_key_fc": (h, h),
            "multi_head_att_value_fc": (h, h),
            "multi_head_att_output_fc": (h, h),
            "ffn_fc_0": (h, 4 * h),
            "ffn_fc_1": (4 * h, h),
        }.items():
            out[f"{layer}_{fc}.w_0"] = (n_in, n_out)
            out[f"{layer}_{fc}.b_0"] = (n_out,)
        for norm in ("post_att", "post_ffn"):
            out[f"{layer}_{norm}_layer_norm_scale"] = (h,)
            out[f"{layer}_{norm}_layer_norm_bias"] = (h,)
    out.update({
        "pooled_fc.w_0": (h, h), "pooled_fc.b_0": (h,),
        "mask_lm_trans_fc.w_0": (h, h), "mask_lm_trans_fc.b_0": (h,),
        "mask_lm_trans_layer_norm_scale": (h,), "mask_lm_trans_layer_norm_bias": (h,),
        "mask_lm_out_fc.b_0": (v,),
        "next_sent_fc.w_0": (h, 2), "next_sent_fc.b_0": (2,),
    })  # fmt: skip
    return out


def random_params(config: dict, seed: int) -> dict[str, np.ndarray]:
    """Values far from an initialiser's, so that a wrong mapping shows in the outputs."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in shapes(config).items():
        if name.endswith("_scale"):
            value = 1 + rng.normal(0, 0.1, shape)
        elif len(shape) == 1:
            value = rng.normal(0, 0.1, shape)
        else:
            value = rng.normal(0, 0.2, shape)
        params[name] = value.astype(np.float32)
    return params


def _layer_norm(x: np.ndarray, p: dict, name: str) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + LAYER_NORM_EPS) * p[f"{name}_layer_norm_scale"] + p[
        f"{name}_layer_norm_bias"
    ]


def _fc(x: np.ndarray, p: dict, name: str) -> np.ndarray:
    return x @ p[f"{name}.w_0"] + p[f"{name}.b_0"]


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def forward(
    params: dict, config: dict, src: np.ndarray, sent: np.ndarray, pos: np.ndarray
) -> dict[str, np.ndarray]:
    """sequence_output, pooled_output, mlm_log_probs (every position), nsp_logits; eval mode."""
    p = {k: v.astype(np.float64) for k, v in params.items()}
    act = {"relu": lambda x: np.maximum(x, 0)}[config["hidden_act"]]
    n_head = config["num_attention_heads"]
    b, length = src.shape
    d_key = config["hidden_size"] // n_head

    x = p["word_embedding"][src] + p["pos_embedding"][pos] + p["sent_embedding"][sent]
    x = _layer_norm(x, p, "pre_encoder")  # 'nd': norm, then dropout (off in eval)
    mask = (src != 0).astype(np.float64)[..., None]  # input_mask: 1 at real tokens
    attn_bias = (mask @ mask.transpose(0, 2, 1) - 1.0) * 10000.0  # scale(bias=-1, after=False)

    def heads(t: np.ndarray) -> np.ndarray:
        return t.reshape(b, length, n_head, d_key).transpose(0, 2, 1, 3)

    for i in range(config["num_hidden_layers"]):
        name = f"encoder_layer_{i}"
        q, k, v = (
            heads(_fc(x, p, f"{name}_multi_head_att_{w}_fc")) for w in ("query", "key", "value")
        )
        scores = (q * d_key**-0.5) @ k.transpose(0, 1, 3, 2) + attn_bias[:, None]
        context = (_softmax(scores) @ v).transpose(0, 2, 1, 3).reshape(b, length, -1)
        attn = _fc(context, p, f"{name}_multi_head_att_output_fc")
        x = _layer_norm(attn + x, p, f"{name}_post_att")  # 'dan': dropout, add, norm
        ffn = _fc(act(_fc(x, p, f"{name}_ffn_fc_0")), p, f"{name}_ffn_fc_1")
        x = _layer_norm(ffn + x, p, f"{name}_post_ffn")

    pooled = np.tanh(_fc(x[:, 0], p, "pooled_fc"))
    trans = _layer_norm(act(_fc(x, p, "mask_lm_trans_fc")), p, "mask_lm_trans")
    logits = trans @ p["word_embedding"].T + p["mask_lm_out_fc.b_0"]
    return {
        "sequence_output": x,
        "pooled_output": pooled,
        "mlm_log_probs": np.log(_softmax(logits)),
        "nsp_logits": _fc(pooled, p, "next_sent_fc"),
    }


def save_params(folder: Path, params: dict[str, np.ndarray]) -> None:
    """The release's params/ folder, written by Paddle's `save_vars` (the 1.x format)."""
    import paddle

    paddle.enable_static()
    try:
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            variables = [
                paddle.static.create_parameter(list(v.shape), str(v.dtype), name=name)
                for name, v in params.items()
            ]
        scope = paddle.static.Scope()
        with paddle.static.scope_guard(scope):
            exe = paddle.static.Executor(paddle.CPUPlace())
            exe.run(startup)
            for name, value in params.items():
                scope.find_var(name).get_tensor().set(value, paddle.CPUPlace())
            paddle.static.save_vars(exe, str(folder), main, vars=variables)
    finally:
        paddle.disable_static()
