# Run in its own environments (requirements-*.txt), not the project's: pyright cannot see them.
# pyright: reportMissingImports=false
"""Write the golden fixtures for the released-checkpoint converters (not run by the tests).

For each checkpoint form it builds a tiny ERNIE 1.0 pretraining model with the library that
owns the form, overwrites every parameter with seeded random values, saves the checkpoint the
way that library does, and stores what that library computes on fixed inputs in
``expected.npz``.  It imports nothing from this project: it is an independent reference.

Forms (each writes ``tests/data/released/<form>/``):

* ``huggingface``: transformers ``ErnieForPreTraining`` (model_type "ernie", as
  nghuyong/ernie-1.0-base-zh), ``save_pretrained`` -> ``model.safetensors`` + ``config.json``;
  the same weights also go to ``huggingface-bin/pytorch_model.bin`` with the old names
  (LayerNorm ``gamma``/``beta``) that nghuyong's published ``.bin`` uses.
* ``paddlenlp``: PaddleNLP ``ErnieForPretraining`` as ``ernie-1.0-base-zh`` ships:
  ``model_state.pdparams`` + legacy ``model_config.json`` (and the ``config.json`` that
  PaddleNLP's ``save_pretrained`` writes now).

``make test`` needs none of torch, transformers, paddlepaddle or paddlenlp: the tests only read
the files written here.  Each form has its own virtual environment (the two libraries' pins
conflict); the full pinned lists are ``requirements-huggingface.txt`` and
``requirements-paddlenlp.txt`` beside this file.

Environment for ``huggingface`` (torch 2.13.0 CPU build; a plain unpinned torch would pull a
multi-GB CUDA build)::

    python3.11 -m venv /work/venv-hf
    /work/venv-hf/bin/pip install torch==2.13.0 transformers==5.18.0 safetensors==0.8.0 numpy==2.4.6
    # or exactly: /work/venv-hf/bin/pip install -r tests/data/released/requirements-huggingface.txt

Environment for ``paddlenlp`` (paddlenlp 3.0.0b4 is the newest release that has
``ErnieForPretraining`` and imports with paddlepaddle 3.3.1, once three of its unpinned
dependencies are held back: aistudio-sdk 0.3.x dropped ``aistudio_sdk.hub.download``, and
pyarrow >= 20 / datasets 5 need NumPy 2 while paddlenlp pins numpy 1.26.4)::

    python3.11 -m venv /work/venv-pd
    /work/venv-pd/bin/pip install paddlepaddle==3.3.1
    /work/venv-pd/bin/pip install paddlenlp==3.0.0b4 aistudio-sdk==0.2.6 pyarrow==19.0.1 datasets==3.5.0
    # or exactly: /work/venv-pd/bin/pip install -r tests/data/released/requirements-paddlenlp.txt

Rerun (from the repository root)::

    /work/venv-hf/bin/python tests/data/released/make_fixtures.py huggingface
    /work/venv-pd/bin/python tests/data/released/make_fixtures.py paddlenlp

(``all`` runs both forms in one interpreter, which then needs both libraries installed.)
Each run prints the tensor names and shapes of the files it wrote, for the README.  The output
is deterministic: fixed seeds, float32 on the CPU.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

# 40 tokens: the five specials, then a..z, then 1..9.
VOCAB = [
    "[PAD]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "[UNK]",
    *[chr(c) for c in range(ord("a"), ord("z") + 1)],
    *[str(d) for d in range(1, 10)],
]
assert len(VOCAB) == 40 and len(set(VOCAB)) == 40

TINY = {
    "vocab_size": 40,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "hidden_act": "relu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 24,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-5,
    "pad_token_id": 0,
    "use_task_id": False,
}

INPUT_SEED = 20240501
WEIGHT_SEED = {"huggingface": 1001, "paddlenlp": 2002}
BATCH, SEQ = 2, 12


def make_inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(INPUT_SEED)
    src_ids = rng.integers(5, TINY["vocab_size"], size=(BATCH, SEQ)).astype(np.int64)
    src_ids[:, 0] = VOCAB.index("[CLS]")
    src_ids[1, -4:] = VOCAB.index("[PAD]")
    sent_ids = np.zeros((BATCH, SEQ), dtype=np.int64)
    sent_ids[:, 6:] = 1
    pos_ids = np.tile(np.arange(SEQ, dtype=np.int64), (BATCH, 1))
    input_mask = (src_ids != 0).astype(np.int64)
    return {"src_ids": src_ids, "sent_ids": sent_ids, "pos_ids": pos_ids, "input_mask": input_mask}


def random_value(rng: np.random.Generator, shape: tuple[int, ...], role: str) -> np.ndarray:
    """Seeded values large enough that a wrong mapping changes the outputs clearly."""
    if role == "ln_scale":
        value = 1.0 + rng.normal(0.0, 0.1, size=shape)
    elif role == "ln_bias":
        value = rng.normal(0.0, 0.1, size=shape)
    elif len(shape) >= 2:  # weight matrices and embeddings
        value = rng.normal(0.0, 0.2, size=shape)
    else:  # biases
        value = rng.normal(0.0, 0.1, size=shape)
    return value.astype(np.float32)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    return (shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))).astype(np.float32)


def write_vocab(path: Path) -> None:
    path.write_text("".join(token + "\n" for token in VOCAB), encoding="utf-8")


def save_expected(folder: Path, inputs: dict, outputs: dict) -> None:
    arrays = {**inputs, **outputs}
    expect = {
        "src_ids": (np.int64, (BATCH, SEQ)),
        "sent_ids": (np.int64, (BATCH, SEQ)),
        "pos_ids": (np.int64, (BATCH, SEQ)),
        "input_mask": (np.int64, (BATCH, SEQ)),
        "sequence_output": (np.float32, (BATCH, SEQ, TINY["hidden_size"])),
        "pooled_output": (np.float32, (BATCH, TINY["hidden_size"])),
        "mlm_log_probs": (np.float32, (BATCH, SEQ, TINY["vocab_size"])),
        "nsp_logits": (np.float32, (BATCH, 2)),
    }
    assert set(arrays) == set(expect), sorted(arrays)
    for name, (dtype, shape) in expect.items():
        assert arrays[name].dtype == dtype and arrays[name].shape == shape, name
        assert np.all(np.isfinite(arrays[name])), name
    np.savez(folder / "expected.npz", **{k: arrays[k] for k in expect})


def describe(title: str, tensors: dict[str, tuple]) -> str:
    lines = [f"{title} ({len(tensors)} tensors):", ""]
    lines += [f"    {name}  {list(shape)}" for name, shape in tensors.items()]
    return "\n".join(lines) + "\n"


def fresh_folder(name: str) -> Path:
    folder = HERE / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def close(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> bool:
    if mask is not None:
        a, b = a[mask.astype(bool)], b[mask.astype(bool)]
    return bool(np.allclose(a, b, atol=1e-5, rtol=1e-5))


# ----------------------------------------------------------------------------- huggingface


def make_huggingface() -> None:
    import torch
    import transformers
    from safetensors.numpy import load_file
    from transformers import ErnieConfig, ErnieForPreTraining

    torch.manual_seed(0)
    inputs = make_inputs()
    config = ErnieConfig(
        **TINY,
        architectures=["ErnieForPreTraining"],
        attn_implementation="eager",
    )
    model = ErnieForPreTraining(config)
    model.eval()

    rng = np.random.default_rng(WEIGHT_SEED["huggingface"])
    ln_names = {
        f"{name}.{p}"
        for name, mod in model.named_modules()
        if isinstance(mod, torch.nn.LayerNorm)
        for p in ("weight", "bias")
    }
    with torch.no_grad():
        # named_parameters yields each shared tensor once: the MLM decoder weight is the word
        # embedding and the decoder bias is cls.predictions.bias, so both stay tied.
        for name, param in model.named_parameters():
            role = ""
            if name in ln_names:
                role = "ln_scale" if name.endswith(".weight") else "ln_bias"
            param.copy_(torch.from_numpy(random_value(rng, tuple(param.shape), role)))
    assert (
        model.cls.predictions.decoder.weight.data_ptr()
        == model.ernie.embeddings.word_embeddings.weight.data_ptr()
    )

    def run(m) -> dict[str, np.ndarray]:
        args = {
            "input_ids": torch.from_numpy(inputs["src_ids"]),
            "attention_mask": torch.from_numpy(inputs["input_mask"]),
            "token_type_ids": torch.from_numpy(inputs["sent_ids"]),
            "position_ids": torch.from_numpy(inputs["pos_ids"]),
        }
        with torch.no_grad():
            out = m(**args, output_hidden_states=True)
            base = m.ernie(**args)
        sequence = out.hidden_states[-1].float().numpy()
        assert np.array_equal(sequence, base.last_hidden_state.float().numpy())
        return {
            "sequence_output": sequence,
            "pooled_output": base.pooler_output.float().numpy(),
            "mlm_log_probs": torch.log_softmax(out.prediction_logits.float(), dim=-1).numpy(),
            "nsp_logits": out.seq_relationship_logits.float().numpy(),
        }

    outputs = run(model)

    folder = fresh_folder("huggingface")
    model.save_pretrained(folder)  # transformers 5 always writes safetensors
    write_vocab(folder / "vocab.txt")
    save_expected(folder, inputs, outputs)

    # The old-style .bin: nghuyong's names (LayerNorm gamma/beta), the tied decoder weight
    # written out as a copy.  Its decoder bias is only cls.predictions.bias, as in his
    # convert.py, which maps paddle's decoder_bias to that name alone.
    state = {}
    for name, tensor in model.state_dict().items():
        if name == "cls.predictions.decoder.bias":
            continue
        if name in ln_names:
            name = (
                name[: -len("weight")] + "gamma"
                if name.endswith(".weight")
                else name[: -len("bias")] + "beta"
            )
        state[name] = tensor.detach().clone().contiguous()
    assert "cls.predictions.decoder.weight" in state
    bin_folder = fresh_folder("huggingface-bin")
    torch.save(state, bin_folder / "pytorch_model.bin")
    shutil.copy(folder / "config.json", bin_folder / "config.json")
    shutil.copy(folder / "vocab.txt", bin_folder / "vocab.txt")
    shutil.copy(folder / "expected.npz", bin_folder / "expected.npz")

    # Both files load back into transformers and give the same outputs on the real positions.
    real = inputs["input_mask"]
    for source in (folder, bin_folder):
        again = ErnieForPreTraining.from_pretrained(source, attn_implementation="eager").eval()
        again_out = run(again)
        for key, value in outputs.items():
            mask = real if value.ndim == 3 else None
            assert close(value, again_out[key], mask), (source.name, key)

    safetensor_names = {k: v.shape for k, v in load_file(folder / "model.safetensors").items()}
    bin_names = {
        k: tuple(v.shape)
        for k, v in torch.load(bin_folder / "pytorch_model.bin", weights_only=True).items()
    }
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    print("config.json keys:", sorted(json.loads((folder / "config.json").read_text())))
    print(describe("huggingface/model.safetensors", safetensor_names))
    print(describe("huggingface-bin/pytorch_model.bin", bin_names))


# ----------------------------------------------------------------------------- paddlenlp

# The ErnieModel arguments of PaddleNLP 2.x, which its legacy model_config.json records.
LEGACY_ERNIE_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "initializer_range",
    "pad_token_id",
)


def make_paddlenlp() -> None:
    import paddle
    import paddlenlp
    from paddlenlp.transformers import ErnieConfig, ErnieForPretraining, ErnieTokenizer

    paddle.set_device("cpu")
    paddle.seed(0)
    inputs = make_inputs()
    config = ErnieConfig(**TINY)
    model = ErnieForPretraining(config)
    model.eval()

    rng = np.random.default_rng(WEIGHT_SEED["paddlenlp"])
    ln_names = {
        f"{name}.{p}"
        for name, mod in model.named_sublayers()
        if isinstance(mod, paddle.nn.LayerNorm)
        for p in ("weight", "bias")
    }
    # named_parameters yields each shared tensor once: the decoder weight is the word embedding
    # (tie_weights) and the decoder bias is cls.predictions.decoder_bias, so both stay tied.
    for name, param in model.named_parameters():
        role = ""
        if name in ln_names:
            role = "ln_scale" if name.endswith(".weight") else "ln_bias"
        param.set_value(random_value(rng, tuple(param.shape), role))
    word = model.ernie.embeddings.word_embeddings.weight
    assert model.cls.predictions.decoder.weight is word

    def run(m) -> dict[str, np.ndarray]:
        ids = paddle.to_tensor(inputs["src_ids"])
        kwargs = {
            "token_type_ids": paddle.to_tensor(inputs["sent_ids"]),
            "position_ids": paddle.to_tensor(inputs["pos_ids"]),
        }
        # A 2-D 1/0 mask becomes PaddleNLP's additive [B,1,1,L] mask (-1e4 at pads); it must
        # equal the mask PaddleNLP builds itself from pad_token_id when given none.
        mask = paddle.to_tensor(inputs["input_mask"].astype(np.float32))
        with paddle.no_grad():
            sequence, pooled = m.ernie(ids, attention_mask=mask, **kwargs)
            sequence_auto, pooled_auto = m.ernie(ids, attention_mask=None, **kwargs)
            scores, nsp = m(ids, attention_mask=mask, masked_positions=None, **kwargs)
        assert np.array_equal(sequence.numpy(), sequence_auto.numpy())
        assert np.array_equal(pooled.numpy(), pooled_auto.numpy())
        return {
            "sequence_output": sequence.numpy().astype(np.float32),
            "pooled_output": pooled.numpy().astype(np.float32),
            "mlm_log_probs": paddle.nn.functional.log_softmax(scores, axis=-1).numpy(),
            "nsp_logits": nsp.numpy().astype(np.float32),
        }

    outputs = run(model)
    assert np.allclose(outputs["mlm_log_probs"], log_softmax(outputs["mlm_log_probs"]), atol=1e-5)

    folder = fresh_folder("paddlenlp")
    # save_pretrained writes model_state.pdparams (paddle.save of the state dict) + config.json.
    model.save_pretrained(str(folder), safe_serialization=False)
    assert (folder / "model_state.pdparams").exists()
    state = paddle.load(str(folder / "model_state.pdparams"))
    assert np.array_equal(
        np.asarray(state["ernie.embeddings.word_embeddings.weight"]), word.numpy()
    )

    # PaddleNLP 2.x's layout for ErnieForPretraining(ErnieModel(...)): the wrapped ErnieModel's
    # arguments with their own init_class, then the outer class.
    legacy = {
        "init_args": [{**{k: TINY[k] for k in LEGACY_ERNIE_KEYS}, "init_class": "ErnieModel"}],
        "init_class": "ErnieForPretraining",
    }
    (folder / "model_config.json").write_text(json.dumps(legacy, indent=2) + "\n", encoding="utf-8")

    with tempfile.TemporaryDirectory() as tmp:
        write_vocab(Path(tmp) / "in.txt")
        tokenizer = ErnieTokenizer(vocab_file=str(Path(tmp) / "in.txt"))
        tokenizer.save_pretrained(tmp + "/out")
        shutil.copy(Path(tmp) / "out" / "vocab.txt", folder / "vocab.txt")
    assert (folder / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1] == VOCAB
    save_expected(folder, inputs, outputs)

    # The checkpoint loads back into PaddleNLP both through the legacy model_config.json alone
    # and through config.json, and gives the same outputs on the real positions.
    real = inputs["input_mask"]
    for config_name in ("model_config.json", "config.json"):
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy(folder / "model_state.pdparams", Path(tmp) / "model_state.pdparams")
            shutil.copy(folder / config_name, Path(tmp) / config_name)
            again = ErnieForPretraining.from_pretrained(tmp)
            again.eval()
            assert again.config.hidden_act == "relu" and again.config.num_hidden_layers == 2
            again_out = run(again)
        for key, value in outputs.items():
            mask = real if value.ndim == 3 else None
            assert close(value, again_out[key], mask), (config_name, key)

    names = {k: tuple(v.shape) for k, v in state.items()}
    print(f"paddlepaddle {paddle.__version__}, paddlenlp {paddlenlp.__version__}")
    print("config.json keys:", sorted(json.loads((folder / "config.json").read_text())))
    print(describe("paddlenlp/model_state.pdparams", names))


FORMS = {"huggingface": make_huggingface, "paddlenlp": make_paddlenlp}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("form", choices=[*FORMS, "all"])
    args = parser.parse_args(argv)
    for name, make in FORMS.items():
        if args.form in (name, "all"):
            make()
    return 0


if __name__ == "__main__":
    sys.exit(main())
