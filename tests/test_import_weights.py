"""`ernie-sm import-weights`: released ERNIE 1.0 checkpoints, checked against the
implementation that owns each form, then used to warm-start a job."""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import re
import shutil
import string
import tarfile
import tempfile
import zipfile
from pathlib import Path

import boto3
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
from ernie_sm.contract.errors import ConfigError
from ernie_sm.text.vocab import load_vocab
from ernie_sm.training import layout, train
from ernie_sm.training.config import load_config
from ernie_sm.training.model import ErnieForPretraining
from ernie_sm.weights import released
from ernie_sm.weights.import_weights import import_weights
from moto import mock_aws

from ernie_sm import cli
from tests import original_ernie
from tests.helpers import TINY_CONFIG, TINY_HYPERPARAMETERS

CONFIG = {
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "relu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 32,
    "initializer_range": 0.02,
    "max_position_embeddings": 24,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "type_vocab_size": 2,
    "vocab_size": 40,
}
VOCAB = ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]", *string.ascii_lowercase, *"123456789"]
FIXTURES = Path(__file__).parent / "data" / "released"
TOLERANCE = 1e-5


def _inputs(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    src = rng.integers(5, len(VOCAB), (2, 12))
    src[:, 0] = 1  # [CLS]
    src[1, -4:] = 0  # [PAD]
    sent = np.where(np.arange(12) < 6, 0, 1).repeat(2).reshape(12, 2).T
    return {"src_ids": src, "sent_ids": sent, "pos_ids": np.tile(np.arange(12), (2, 1))}


def write_original(folder: Path, params: dict, config: dict = CONFIG) -> Path:
    """A release in the original layout: params/, ernie_config.json, vocab.txt (token<TAB>id)."""
    original_ernie.save_params(folder / "params", params)
    (folder / "ernie_config.json").write_text(json.dumps(config))
    (folder / "vocab.txt").write_text("".join(f"{t}\t{i}\n" for i, t in enumerate(VOCAB)))
    return folder


def our_outputs(model_dir: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What the imported model computes, from what import-weights wrote."""
    vocab = load_vocab(model_dir / "vocab.txt")
    config = load_config(str(model_dir / "ernie_config.json"), model_dir, len(vocab))
    model = ErnieForPretraining(config, vocab.pad_id)
    model.set_state_dict(paddle.load(str(model_dir / "model.pdparams")))
    model.eval()
    ids = [paddle.to_tensor(inputs[k]) for k in ("src_ids", "sent_ids", "pos_ids")]
    with paddle.no_grad():
        sequence, pooled = model.ernie(*ids)
        mlm = F.log_softmax(model.mlm_logits(sequence), axis=-1)
        nsp = model.nsp(pooled)
    inference = paddle.jit.load(str(model_dir / "inference" / "ernie"))
    inference.eval()
    exported_mlm, exported_nsp = inference(*ids)
    return {
        "sequence_output": sequence.numpy(),
        "pooled_output": pooled.numpy(),
        "mlm_log_probs": mlm.numpy(),
        "nsp_logits": nsp.numpy(),
        "exported_mlm_log_probs": exported_mlm.numpy(),
        "exported_nsp_probs": exported_nsp.numpy(),
    }


def assert_matches(ours: dict, expected: dict, src_ids: np.ndarray) -> None:
    real = src_ids != 0  # padded positions are not compared: implementations differ there
    for key in ("sequence_output", "mlm_log_probs"):
        np.testing.assert_allclose(
            ours[key][real], expected[key][real], rtol=0, atol=TOLERANCE, err_msg=key
        )
    for key in ("pooled_output", "nsp_logits"):
        np.testing.assert_allclose(ours[key], expected[key], rtol=0, atol=TOLERANCE, err_msg=key)
    if "exported_mlm_log_probs" in ours:  # the inference model import-weights saved
        np.testing.assert_allclose(
            ours["exported_mlm_log_probs"][real],
            expected["mlm_log_probs"][real],
            rtol=0,
            atol=TOLERANCE,
        )
        nsp = np.exp(expected["nsp_logits"])
        nsp /= nsp.sum(-1, keepdims=True)
        np.testing.assert_allclose(ours["exported_nsp_probs"], nsp, rtol=0, atol=TOLERANCE)  # fmt: skip


@pytest.fixture(scope="module")
def params() -> dict[str, np.ndarray]:
    return original_ernie.random_params(CONFIG, seed=0)


@pytest.fixture
def release(tmp_path, params) -> Path:
    return write_original(tmp_path / "release", params)


def test_the_original_release_matches_the_original_graph(tmp_path, release, params):
    out = import_weights(release, tmp_path / "model")
    assert {p.name for p in out.iterdir()} == {
        "model.pdparams",
        "ernie_config.json",
        "vocab.txt",
        "inference",
        "serving",
        "serving.json",
    }
    inputs = _inputs()
    expected = original_ernie.forward(params, CONFIG, *inputs.values())
    assert_matches(our_outputs(out, inputs), expected, inputs["src_ids"])


def test_an_archive_of_the_release_imports_into_model_tar_gz(tmp_path, release):
    archive = tmp_path / "ERNIE_1.0_max-len-512.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(release, arcname="ERNIE_1.0_max-len-512")  # one folder wrapping the files
    out = import_weights(archive, tmp_path / "out" / "model.tar.gz")
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
    # As SageMaker packs SM_MODEL_DIR: the files at the root of the archive.
    assert {
        "model.pdparams",
        "ernie_config.json",
        "vocab.txt",
        "inference/ernie.pdiparams",
        "serving/fill_mask.pdiparams",
        "serving/features.pdiparams",
        "serving.json",
    } <= names
    assert not any(n.startswith(("model/", "ERNIE")) for n in names)


def _drop(release: Path, *names: str) -> None:
    for name in names:
        (release / "params" / name).unlink()


def _add(release: Path, **tensors: np.ndarray) -> None:
    """Extra variable files, written by Paddle beside the others."""
    original_ernie.save_params(release / "params", tensors)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda r: _drop(r, "encoder_layer_1_ffn_fc_0.w_0", "sent_embedding"),
         r"missing: encoder_layer_1_ffn_fc_0.w_0 \(for ernie.encoder.layers.1.linear1.weight\), "
         r"sent_embedding \(for ernie.sent_emb.weight\)"),
        (lambda r: _add(r, **{"encoder_layer_2_ffn_fc_0.w_0": np.zeros((32, 128), np.float32)}),
         r"not part of ERNIE 1.0: encoder_layer_2_ffn_fc_0.w_0"),
        (lambda r: _add(r, pos_embedding=np.zeros((20, 32), np.float32)),
         r"pos_embedding is \[20, 32\], needs \[24, 32\]"),
        (lambda r: _add(r, **{"mask_lm_out_fc.w_0": np.ones((40, 32), np.float32)}),
         r"tied tensors that differ: mask_lm_out_fc.w_0 \(ERNIE 1.0 ties it to word_embedding\)"),
        (lambda r: (r / "params" / "notes.txt").write_text("hello"),
         r"params/notes.txt is not a PaddlePaddle variable file"),
        (lambda r: (r / "ernie_config.json").write_text(json.dumps({**CONFIG, "use_task_id": True})),
         r"sets use_task_id: it adds task-type embeddings"),
        (lambda r: (r / "ernie_config.json").write_text(json.dumps({**CONFIG, "hidden_size": 30})),
         r"hidden_size 30 is not divisible by num_attention_heads 4"),
        (lambda r: (r / "ernie_config.json").write_text(json.dumps({**CONFIG, "vocab_size": 30})),
         r"vocab_size 30 is smaller than the vocab \(40 tokens\)"),
        (lambda r: (r / "vocab.txt").unlink(), r"has no vocab.txt: give --vocab"),
        (lambda r: shutil.rmtree(r / "params"), r"is not a released ERNIE checkpoint"),
    ],
)  # fmt: skip
def test_a_release_that_is_not_ernie_1_0_is_refused_naming_what(tmp_path, release, damage, message):
    damage(release)
    with pytest.raises(ConfigError, match=message):
        import_weights(release, tmp_path / "model")
    assert not (tmp_path / "model").exists()  # nothing half-written


def test_tensors_ernie_1_0_does_not_use_are_named_and_left_out(tmp_path, release, caplog):
    _add(
        release,
        task_embedding=np.ones((3, 32), np.float32),
        word_embedding_moment1_0=np.ones((40, 32), np.float32),
    )
    caplog.set_level(logging.WARNING)
    out = import_weights(release, tmp_path / "model")
    warnings = [r.getMessage() for r in caplog.records]
    assert any(w.startswith("task_embedding: task-type embeddings") for w in warnings)
    assert any(w.startswith("word_embedding_moment1_0: optimizer state") for w in warnings)
    assert "task_embedding" not in paddle.load(str(out / "model.pdparams"))


def test_a_base_model_without_heads_needs_init_missing_heads(tmp_path, release, params, caplog):
    heads = [n for n in params if n.startswith(("mask_lm", "next_sent", "pooled_fc"))]
    _drop(release, *heads)
    with pytest.raises(
        ConfigError, match=r"no pretraining heads .*nsp.weight.*--init-missing-heads"
    ):
        import_weights(release, tmp_path / "model")
    caplog.set_level(logging.WARNING)
    out = import_weights(release, tmp_path / "model", init_missing_heads=True)
    assert any(
        r.getMessage().startswith("initialised, not imported: mlm_bias") for r in caplog.records
    )
    state = paddle.load(str(out / "model.pdparams"))
    np.testing.assert_array_equal(state["ernie.word_emb.weight"].numpy(), params["word_embedding"])
    assert (
        state["nsp.weight"].numpy().any() is not np.False_
        and state["nsp.weight"].numpy().std() < 0.05
    )


def test_the_output_must_be_new_and_the_source_must_exist(tmp_path, release):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("")
    with pytest.raises(ConfigError, match="already exists"):
        import_weights(release, tmp_path / "taken")
    with pytest.raises(ConfigError, match="does not exist"):
        import_weights(tmp_path / "absent", tmp_path / "model")
    (tmp_path / "release.zip").write_bytes(b"PK")
    with pytest.raises(ConfigError, match=r"neither a folder nor a \.tar"):
        import_weights(tmp_path / "release.zip", tmp_path / "model")


def test_errors_about_an_archive_name_the_archive_not_where_it_was_unpacked(tmp_path, release):
    (release / "vocab.txt").unlink()
    archive = tmp_path / "ERNIE_1.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(release, arcname="ERNIE_1.0")
    with pytest.raises(ConfigError) as error:
        import_weights(archive, tmp_path / "model")
    assert str(error.value).startswith(f"{archive}:ERNIE_1.0 has no vocab.txt: give --vocab")
    assert tempfile.gettempdir() not in str(error.value).replace(str(tmp_path), "")


def test_an_upload_outside_models_is_refused_before_anything_is_written(tmp_path, release, capsys):
    """Prepare takes warm_start_model only under the bucket's models/: an import uploaded
    elsewhere could never be used, so it is refused before converting or uploading."""
    output = tmp_path / "model"
    argv = ["import-weights", str(release), "--output", str(output)]
    assert cli.main([*argv, "--upload", "s3://ernie-data/wrong/place/"]) == 2
    err = capsys.readouterr().err
    assert "executions warm-start only from models under s3://ernie-data/models/" in err
    assert "e.g. s3://ernie-data/models/imported/model.tar.gz" in err
    assert not output.exists()


def test_a_vocab_preset_stands_in_for_a_missing_vocab_txt(tmp_path, release):
    (release / "vocab.txt").unlink()
    with pytest.raises(
        ConfigError, match=r"vocab_size 40 is smaller than the vocab \(17964 tokens\)"
    ):
        import_weights(release, tmp_path / "model", vocab="ernie-1.0")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")  # one token a line, as transformers writes it
    out = import_weights(release, tmp_path / "model", vocab=str(vocab))
    assert load_vocab(out / "vocab.txt").tokens == tuple(VOCAB)


def test_a_torch_file_that_runs_code_is_refused(tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(CONFIG))
    (folder / "vocab.txt").write_text("\n".join(VOCAB))
    with zipfile.ZipFile(folder / "pytorch_model.bin", "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(os.system))
    with pytest.raises(
        ConfigError, match=r"refusing to load posix.system: not part of a state dict"
    ):
        import_weights(folder, tmp_path / "model")
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({}))  # torch < 1.6's format
    with pytest.raises(ConfigError, match=r"not a zip-format torch file"):
        import_weights(folder, tmp_path / "model")


def test_the_command_uploads_model_tar_gz_and_prints_the_input(tmp_path, release, aws_env, capsys):
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="ernie-data")
        argv = ["import-weights", str(release), "--output", str(tmp_path / "model")]
        assert cli.main([*argv, "--upload", "s3://ernie-data/models/ernie-1.0/"]) == 0
        out = capsys.readouterr().out
        assert "uploaded to s3://ernie-data/models/ernie-1.0/model.tar.gz" in out
        assert '"warm_start_model": "s3://ernie-data/models/ernie-1.0/model.tar.gz"' in out
        body = s3.get_object(Bucket="ernie-data", Key="models/ernie-1.0/model.tar.gz")["Body"]
        (tmp_path / "got.tar.gz").write_bytes(body.read())
        with tarfile.open(tmp_path / "got.tar.gz") as tar:
            assert "model.pdparams" in tar.getnames()

        argv = ["import-weights", str(release), "--output", str(tmp_path / "again.tar.gz")]
        assert cli.main([*argv, "--upload", "s3://no-such-bucket/models/x/"]) == 2
        assert "no-such-bucket" in capsys.readouterr().err


def test_the_command_reports_a_bad_source_in_one_line(tmp_path, capsys):
    assert cli.main(["import-weights", str(tmp_path), "--output", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ernie-sm import-weights: ") and "not a released ERNIE checkpoint" in err


LOSS = re.compile(r"\[train\] step=(\d+) .*loss: ([0-9.]+)")


def _first_loss(caplog) -> float:
    return next(float(m.group(2)) for r in caplog.records if (m := LOSS.search(r.getMessage())))


def _ernie_job(base: Path, shard: Path, steps: int) -> Path:
    """A job on real ERNIE 1.0 data (the demo shard, the released vocab) and a tiny model."""
    train_dir = base / "input" / "data" / "train"
    train_dir.mkdir(parents=True)
    (train_dir / "train_filelist").write_text(f"{shard}\t0.5\n")
    (train_dir / "ernie_config.json").write_text(
        json.dumps({**TINY_CONFIG, "max_position_embeddings": 128})
    )
    hp = {
        **TINY_HYPERPARAMETERS,
        "vocab_path": "ernie-1.0",
        "max_seq_len": "128",
        "batch_size": "2048",
        "learning_rate": "0.005",
        "num_train_steps": str(steps),
        "save_steps": str(steps),
    }
    layout.write_local_job(base, hp, ["train"])
    return base  # fmt: skip


def test_a_job_warm_started_from_an_imported_release_starts_below_scratch(
    tmp_path, sm_env, caplog, ernie_shard
):
    caplog.set_level(logging.INFO)
    trained = sm_env(_ernie_job(tmp_path / "trained", ernie_shard, steps=30))
    assert train.main() == 0
    scratch = _first_loss(caplog)
    # That model, released in the original form under the original names.
    model_dir = trained / "model"
    config = json.loads((model_dir / "ernie_config.json").read_text())
    names = released.name_map(released.FORMS["original"], config["num_hidden_layers"])
    state = paddle.load(str(model_dir / "model.pdparams"))
    release = tmp_path / "release"
    original_ernie.save_params(
        release / "params", {names[k][0]: v.numpy() for k, v in state.items()}
    )
    shutil.copy(model_dir / "ernie_config.json", release)
    shutil.copy(model_dir / "vocab.txt", release)

    job = sm_env(_ernie_job(tmp_path / "continued", ernie_shard, steps=1))
    channel = job / "input" / "data" / "model"
    assert cli.main(["import-weights", str(release), "-o", str(channel / "model.tar.gz")]) == 0
    caplog.clear()
    assert train.main() == 0
    assert "warm start: weights from" in caplog.text
    continued = _first_loss(caplog)
    assert continued < scratch - 1.0, (continued, scratch)


def _fixture(form: str) -> tuple[Path, dict[str, np.ndarray]]:
    folder = FIXTURES / form
    return folder, dict(np.load(folder / "expected.npz"))


@pytest.mark.parametrize("form", ["huggingface", "huggingface-bin"])
def test_transformers_checkpoints_match_transformers(tmp_path, form):
    """Written and run by transformers' ErnieForPreTraining (tests/data/released/)."""
    folder, expected = _fixture(form)
    out = import_weights(folder, tmp_path / "model")
    inputs = {k: expected[k] for k in ("src_ids", "sent_ids", "pos_ids")}
    assert_matches(our_outputs(out, inputs), expected, expected["src_ids"])


def test_paddlenlp_checkpoints_match_paddlenlp(tmp_path, monkeypatch):
    """Written and run by PaddleNLP's ErnieForPretraining. PaddleNLP runs every LayerNorm with
    epsilon 1e-12 (its _init_weights sets it), the original graph and transformers with 1e-5,
    the epsilon the weights were trained with and the one our model keeps."""
    folder, expected = _fixture("paddlenlp")
    out = import_weights(folder, tmp_path / "model")
    inputs = {k: expected[k] for k in ("src_ids", "sent_ids", "pos_ids")}
    with pytest.raises(AssertionError, match="Max absolute difference"):
        assert_matches(our_outputs(out, inputs), expected, expected["src_ids"])
    monkeypatch.setattr(paddle.nn.LayerNorm, "forward", _layer_norm_with_epsilon(1e-12))
    ours = our_outputs(out, inputs)
    del ours["exported_mlm_log_probs"], ours["exported_nsp_probs"]  # saved with 1e-5 inside
    assert_matches(ours, expected, expected["src_ids"])


def _layer_norm_with_epsilon(epsilon: float):
    forward = paddle.nn.LayerNorm.forward

    def with_epsilon(self, x):
        self._epsilon = epsilon
        return forward(self, x)

    return with_epsilon


def test_the_paddlenlp_legacy_config_and_a_missing_vocab(tmp_path):
    """ernie-1.0 as PaddleNLP 2.x ships it: model_config.json only, no vocab.txt."""
    folder = tmp_path / "ernie-1.0"
    shutil.copytree(FIXTURES / "paddlenlp", folder)
    (folder / "config.json").unlink()
    (folder / "vocab.txt").unlink()
    with pytest.raises(ConfigError, match=r"has no vocab\.txt: give --vocab"):
        import_weights(folder, tmp_path / "model")
    out = import_weights(
        folder, tmp_path / "model", vocab=str(FIXTURES / "paddlenlp" / "vocab.txt")
    )
    assert json.loads((out / "ernie_config.json").read_text())["num_hidden_layers"] == 2


def test_a_masked_lm_conversion_lacks_the_nsp_head(tmp_path, caplog):
    """nghuyong's ernie-1.0-base-zh is an ErnieForMaskedLM: no seq_relationship tensors."""
    from safetensors.numpy import load_file, save_file

    folder = tmp_path / "masked-lm"
    shutil.copytree(FIXTURES / "huggingface", folder)
    tensors = load_file(str(folder / "model.safetensors"))
    save_file(
        {k: v for k, v in tensors.items() if "seq_relationship" not in k},
        str(folder / "model.safetensors"),
    )
    with pytest.raises(ConfigError, match=r"no pretraining heads nsp.weight, nsp.bias"):
        import_weights(folder, tmp_path / "model")
    caplog.set_level(logging.WARNING)
    import_weights(folder, tmp_path / "model", init_missing_heads=True)
    assert "initialised, not imported: nsp.weight, nsp.bias" in caplog.text


# -- hostile and broken checkpoints ---------------------------------------------------------
# Released checkpoints are downloaded from the internet: no byte of one may run code, read
# memory outside its data or wedge the import. Each is refused in one line, with exit 2.


class _Payload:
    """Unpickled by a plain unpickler, it creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _refused(source: Path, output: Path, capsys, message: str) -> str:
    assert cli.main(["import-weights", str(source), "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ernie-sm import-weights: "), err
    assert re.search(message, err), err
    assert len(err.strip().splitlines()) == 1, err  # one line, no traceback
    assert not output.exists()
    return err


def _hf_tensors() -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(FIXTURES / "huggingface" / "model.safetensors"))


def _hf_folder(tmp_path: Path, name: str = "hf") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for file in ("config.json", "vocab.txt"):
        shutil.copy(FIXTURES / "huggingface" / file, folder)
    return folder


# A torch.save zip written opcode by opcode, as torch lays it out (protocol 2).
def _p_global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _p_str(text: str) -> bytes:
    data = text.encode()
    return b"X" + len(data).to_bytes(4, "little") + data


def _p_int(n: int) -> bytes:
    data = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


def _p_tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


ORDERED_DICT = _p_global("collections", "OrderedDict") + b")R"


def write_torch_bin(
    path: Path, tensors: dict[str, np.ndarray], views: dict | None = None,
    metadata: bool = False, storage: str = "FloatStorage", payload: bytes = b"",
) -> None:  # fmt: skip
    """`views`: name -> (offset, size, stride) declared for that tensor instead of its own."""
    views = views or {}
    entries = []
    with zipfile.ZipFile(path, "w") as archive:
        for key, (name, value) in enumerate(tensors.items()):
            archive.writestr(f"archive/data/{key}", np.ascontiguousarray(value).tobytes())
            offset, size, stride = views.get(
                name, (0, value.shape, tuple(s // value.itemsize for s in value.strides))
            )
            pid = _p_tuple(
                _p_str("storage"), _p_global("torch", storage), _p_str(str(key)),
                _p_str("cpu"), _p_int(value.size),
            ) + b"Q"  # fmt: skip
            tensor = _p_global("torch._utils", "_rebuild_tensor_v2") + _p_tuple(
                pid, _p_int(offset), _p_tuple(*map(_p_int, size)),
                _p_tuple(*map(_p_int, stride)), b"\x89", ORDERED_DICT,
            ) + b"R"  # fmt: skip
            entries.append(_p_str(name) + tensor)
        body = ORDERED_DICT + b"(" + b"".join(entries) + payload + b"u"
        if metadata:  # what torch.save(model.state_dict()) writes: OrderedDict._metadata
            version = b"}" + _p_str("version") + _p_int(1) + b"s"
            meta = ORDERED_DICT + b"(" + _p_str("") + version + _p_str("ernie") + version + b"u"
            body += b"}" + _p_str("_metadata") + meta + b"s" + b"b"
        archive.writestr("archive/data.pkl", b"\x80\x02" + body + b".")
        archive.writestr("archive/byteorder", "little")


def test_no_checkpoint_form_runs_pickled_code(tmp_path, release, capsys):
    marker = tmp_path / "marker"
    # PaddleNLP's model_state.pdparams: a pickle of a dict of arrays.
    pdparams = tmp_path / "paddlenlp"
    shutil.copytree(FIXTURES / "paddlenlp", pdparams)
    state = {"ernie.embeddings.word_embeddings.weight": _Payload(marker)}
    (pdparams / "model_state.pdparams").write_bytes(pickle.dumps(state, protocol=4))
    _refused(pdparams, tmp_path / "m", capsys, r"refusing to load (io|_io|builtins)\.open")
    # The original params/: a variable file that is a pickle, with and without a PROTO opcode.
    for protocol in (0, 2):
        (release / "params" / "word_embedding").write_bytes(
            pickle.dumps(_Payload(marker), protocol)
        )
        _refused(
            release,
            tmp_path / "m",
            capsys,
            r"params/word_embedding is not a PaddlePaddle variable file",
        )
    # transformers' pytorch_model.bin: the payload among real tensors.
    folder = _hf_folder(tmp_path)
    write_torch_bin(
        folder / "pytorch_model.bin",
        _hf_tensors(),
        payload=_p_str("x") + pickle.dumps(_Payload(marker), 2)[2:-1],
    )
    _refused(folder, tmp_path / "m", capsys, r"refusing to load (io|_io|builtins)\.open")
    assert not marker.exists()


def test_the_restricted_unpickler_still_reads_what_numpy_and_paddle_pickle(tmp_path):
    from ernie_sm.training import safe_pickle

    arrays = {"a": np.arange(6, dtype=">f4").reshape(2, 3), "b": np.asfortranarray(np.ones((2, 3)))}
    for protocol in (2, 4, 5):
        got = safe_pickle.load(io.BytesIO(pickle.dumps(arrays, protocol)))
        for name, value in arrays.items():
            np.testing.assert_array_equal(got[name], value)
    with pytest.raises(safe_pickle.UnsafePickle, match="dtype 'O8' is not a number type"):
        safe_pickle.load(io.BytesIO(pickle.dumps(np.array([{}], dtype=object))))
    recursive: list = []
    recursive.append(recursive)
    with pytest.raises(safe_pickle.UnsafePickle, match="nested deeper"):
        safe_pickle.load(io.BytesIO(pickle.dumps(recursive)))


@pytest.mark.parametrize(
    "view, message",
    [
        ((100_000, (2, 32), (32, 1)), r"at offset 100000 reach past its storage \d+ of 64 elements"),
        ((0, (2, 32), (4096, 1)), r"strides \[4096, 1\] at offset 0 reach past"),
        ((0, (2, 32), (2**40, 1)), r"strides \[1099511627776, 1\]"),  # a segfault, once
        ((0, (2, 32), (-32, 1)), r"not a list of whole numbers >= 0"),
        ((0, (64, 64), (0, 0)), r"reach past its storage"),  # 4096 elements out of 64
        ((0, (2, 32), (32,)), r"do not fit its shape"),
    ],
)  # fmt: skip
def test_a_tensor_declared_beyond_its_storage_is_refused(tmp_path, capsys, view, message):
    folder = _hf_folder(tmp_path)
    name = "ernie.embeddings.token_type_embeddings.weight"
    write_torch_bin(folder / "pytorch_model.bin", _hf_tensors(), views={name: view})
    err = _refused(folder, tmp_path / "m", capsys, message)
    assert f"tensor {name}:" in err


def test_a_state_dict_saved_by_torch_with_metadata_and_bfloat16_files_import(tmp_path):
    tensors = _hf_tensors()
    folder = _hf_folder(tmp_path, "bin")
    write_torch_bin(folder / "pytorch_model.bin", tensors, metadata=True)
    out = import_weights(folder, tmp_path / "from-bin")
    word = tensors["ernie.embeddings.word_embeddings.weight"]
    imported = paddle.load(str(out / "model.pdparams"))["ernie.word_emb.weight"].numpy()
    np.testing.assert_array_equal(imported, word)

    # bfloat16 safetensors: the top 16 bits of each float32.
    folder = _hf_folder(tmp_path, "bf16")
    header, data = {}, b""
    for name, value in tensors.items():
        raw = (
            (np.ascontiguousarray(value, np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
        )
        header[name] = {
            "dtype": "BF16",
            "shape": list(value.shape),
            "data_offsets": [len(data), len(data) + len(raw)],
        }
        data += raw
    text = json.dumps(header).encode()
    (folder / "model.safetensors").write_bytes(len(text).to_bytes(8, "little") + text + data)
    out = import_weights(folder, tmp_path / "from-bf16")
    imported = paddle.load(str(out / "model.pdparams"))["ernie.word_emb.weight"].numpy()
    truncated = (word.view(np.uint32) & 0xFFFF0000).view(np.float32)
    np.testing.assert_array_equal(imported, truncated)


@pytest.mark.parametrize(
    "value, message",
    [
        (np.float32("nan"), r"weights with NaN or infinite values .*: ernie.pooler.dense.weight"),
        (np.float32("inf"), r"weights with NaN or infinite values .*: ernie.pooler.dense.weight"),
        (np.float64(1e300), r"weights with NaN or infinite values \(or beyond float32\)"),
        (np.int32(1), r"not floating point: ernie.pooler.dense.weight \(int32\)"),
    ],
)
def test_weights_that_are_not_finite_floats_are_refused_naming_them(
    tmp_path, capsys, value, message
):
    from safetensors.numpy import save_file

    tensors = _hf_tensors()
    weight = tensors["ernie.pooler.dense.weight"]
    weight = weight.astype(value.dtype)
    weight[3, 4] = value
    tensors["ernie.pooler.dense.weight"] = weight
    folder = _hf_folder(tmp_path)
    save_file(tensors, str(folder / "model.safetensors"))
    _refused(folder, tmp_path / "m", capsys, message)


def _tar(path: Path, *members: tuple[tarfile.TarInfo, bytes | None]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            info.size = len(data or b"")
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _symlink(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info, None


def _garbage(folder: Path, name: str, data: bytes) -> Path:
    (folder / name).write_bytes(data)
    return folder


@pytest.mark.parametrize(
    "make, message",
    [
        # Archives the tar data filter refuses: nothing lands outside the output.
        (lambda t: _tar(t / "r.tar.gz", (tarfile.TarInfo("../outside"), b"x")),
         r"refusing to unpack it: .*outside"),
        # An absolute name loses its leading /: it lands inside, and is no checkpoint.
        (lambda t: _tar(t / "r.tar.gz", (tarfile.TarInfo(str(t / "outside")), b"x")),
         r"is not a released ERNIE checkpoint"),
        (lambda t: _tar(t / "r.tar.gz", _symlink("params", str(t))),
         r"refusing to unpack it: .*params"),
        (lambda t: _tar(t / "r.tar.gz", _symlink("a", "../../outside")),
         r"refusing to unpack it"),
        (lambda t: _garbage(t, "r.tar.gz", _tar(t / "w.tar.gz", (tarfile.TarInfo("x"), os.urandom(50_000))).read_bytes()[:5000]) / "r.tar.gz",
         r"r.tar.gz is a damaged or truncated archive"),
        # Broken pickles and files, in each form.
        (lambda t: _garbage(shutil.copytree(FIXTURES / "paddlenlp", t / "p"), "model_state.pdparams", b"\x80\x04garbage"),
         r"model_state.pdparams is not a Paddle state dict: not a readable pickle"),
        (lambda t: _garbage(shutil.copytree(FIXTURES / "paddlenlp", t / "p"), "model_state.pdparams",
                            (FIXTURES / "paddlenlp" / "model_state.pdparams").read_bytes()[:5000]),
         r"model_state.pdparams is not a Paddle state dict"),
        (lambda t: _garbage(shutil.copytree(FIXTURES / "paddlenlp", t / "p"), "model_state.pdparams",
                            pickle.dumps({"x": [1, 2]})),
         r"entries that are not named arrays: x"),
        (lambda t: _garbage(_hf_folder(t), "model.safetensors", (100_000).to_bytes(8, "little") + b"[" * 100_000),
         r"model.safetensors is not a safetensors file \(maximum recursion depth"),
        (lambda t: _garbage(_hf_folder(t), "model.safetensors", b"\xff" * 8 + b"{}"),
         r"model.safetensors is not a safetensors file \(a header of"),
        (lambda t: _garbage(_hf_folder(t), "model.safetensors", (FIXTURES / "huggingface" / "model.safetensors").read_bytes()[:9000]),
         r"model.safetensors is not a safetensors file \(tensor .* lie outside the data"),
        (lambda t: _garbage(_hf_folder(t), "pytorch_model.bin", (FIXTURES / "huggingface-bin" / "pytorch_model.bin").read_bytes()[:4000]),
         r"pytorch_model.bin is not a zip-format torch file"),
        (lambda t: write_torch_bin(_hf_folder(t) / "pytorch_model.bin", _hf_tensors(), payload=b"\xff")
         or t / "hf", r"pytorch_model.bin: not a readable pickle"),
    ],
)  # fmt: skip
def test_hostile_or_broken_sources_are_refused_in_one_line(tmp_path, capsys, make, message):
    source = make(tmp_path)
    _refused(source, tmp_path / "out" / "model", capsys, message)
    assert not (tmp_path / "outside").exists()
    assert not (tmp_path.parent / "outside").exists()


def test_a_truncated_variable_file_and_sizes_beyond_the_tensors_are_refused(
    tmp_path, release, capsys
):
    word = release / "params" / "word_embedding"
    word.write_bytes(word.read_bytes()[:-4])
    _refused(
        release,
        tmp_path / "m",
        capsys,
        r"word_embedding is not a PaddlePaddle variable file \(dims \[40, 32\]",
    )
    # Config sizes are checked against the tensors before any memory is allocated for them.
    shutil.copy(tmp_path / "release" / "params" / "sent_embedding", word)
    release2 = write_original(tmp_path / "r2", original_ernie.random_params(CONFIG, seed=0))
    config = release2 / "ernie_config.json"
    config.write_text(json.dumps({**CONFIG, "vocab_size": 10**12}))
    _refused(
        release2,
        tmp_path / "m",
        capsys,
        r"word_embedding is \[40, 32\], needs \[1000000000000, 32\]",
    )
    config.write_text(json.dumps({**CONFIG, "num_hidden_layers": 10**9}))
    _refused(
        release2,
        tmp_path / "m",
        capsys,
        r"num_hidden_layers 1000000000, but its \d+ tensors hold at most 2 layers",
    )
    config.write_text(json.dumps({**CONFIG, "max_position_embeddings": 10**12}))
    _refused(
        release2,
        tmp_path / "m",
        capsys,
        r"pos_embedding is \[24, 32\], needs \[1000000000000, 32\]",
    )


def test_special_files_and_an_output_under_a_file_are_refused(tmp_path, release, capsys):
    import signal
    import subprocess
    import time

    folder = _hf_folder(tmp_path)
    fifos = [folder / "model.safetensors", tmp_path / "release.tar.gz"]
    for fifo in fifos:
        os.mkfifo(fifo)
    # Should a read block on a FIFO (as it did), a writer unblocks it after 15 s: the test
    # then fails instead of hanging.
    unblock = [
        subprocess.Popen(
            ["timeout", "30", "sh", "-c", f'sleep 15; : > "{fifo}"'], start_new_session=True
        )
        for fifo in fifos
    ]
    try:
        start = time.monotonic()
        _refused(folder, tmp_path / "m", capsys, r"model.safetensors is not a regular file")
        _refused(fifos[1], tmp_path / "m", capsys, r"is not a regular file or a folder")
        assert time.monotonic() - start < 10
    finally:
        for process in unblock:  # each in its own process group: sh and sleep go too
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    (tmp_path / "file").write_text("")
    _refused(
        release,
        tmp_path / "file" / "sub" / "model",
        capsys,
        r"--output .*: .*/file is not a folder",
    )


@pytest.mark.parametrize("name", ["model", "model.tar.gz"])
def test_a_run_killed_while_the_model_moves_into_place_leaves_nothing(
    tmp_path, release, monkeypatch, name
):
    """The model is built beside the output and renamed into place. A kill (here a
    KeyboardInterrupt) in a copy across file systems used to leave a model folder without
    inference/, or a 0-byte model.tar.gz that blocked the rerun with "already exists"."""
    output = tmp_path / "out" / name
    rename, copyfile = os.rename, shutil.copyfile

    def other_file_system(src, dst, *args, **kwargs):
        if Path(dst) == output:
            raise OSError(18, "Invalid cross-device link")
        return rename(src, dst, *args, **kwargs)

    def killed(src, dst, *args, **kwargs):
        if str(dst).startswith(str(output)):
            Path(dst).write_bytes(b"")
            raise KeyboardInterrupt
        return copyfile(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", other_file_system)
    monkeypatch.setattr(shutil, "copyfile", killed)
    with pytest.raises((ConfigError, KeyboardInterrupt)):
        import_weights(release, output)
    assert not output.exists()
    assert not output.parent.exists() or list(output.parent.iterdir()) == []
    assert not any(p.name.startswith(f".{name}.") for p in tmp_path.iterdir())
    monkeypatch.undo()
    assert import_weights(release, output) == output  # the rerun is not blocked


def test_a_run_killed_in_its_last_step_leaves_nothing(tmp_path, release, monkeypatch):
    from ernie_sm.weights import import_weights as module

    def killed(model_dir, archive):
        archive.write_bytes(b"")
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "pack", killed)
    with pytest.raises(KeyboardInterrupt):
        import_weights(release, tmp_path / "model.tar.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release"]
    monkeypatch.undo()
    (tmp_path / "empty").mkdir()  # an empty folder is taken over whole
    out = import_weights(release, tmp_path / "empty")
    assert (out / "inference" / "ernie.pdiparams").is_file()


def test_a_bad_upload_uri_is_refused_before_any_work(tmp_path, release, capsys):
    output = tmp_path / "model.tar.gz"
    argv = ["import-weights", str(release), "--output", str(output)]
    assert cli.main([*argv, "--upload", "ernie-data/models/x/"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "ernie-sm import-weights: --upload 'ernie-data/models/x/' is not an s3://"
    )
    assert not output.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["release"]
