import numpy as np
import paddle
import pytest
from ernie_sm.training.config import ErnieConfig
from ernie_sm.training.model import ErnieForPretraining, no_decay, pretraining_loss

CONFIG = ErnieConfig(
    vocab_size=50,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    max_position_embeddings=16,
)


def _inputs():
    src = np.array([[1, 5, 6, 2, 7, 2, 0, 0], [1, 8, 9, 2, 10, 11, 12, 2]])
    sent = np.array([[0, 0, 0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1, 1, 1]])
    pos = np.tile(np.arange(8), (2, 1))
    return [paddle.to_tensor(a) for a in (src, sent, pos)]


def test_shapes_tied_projection_and_init():
    paddle.seed(1)
    model = ErnieForPretraining(CONFIG)
    mlm, nsp = model(*_inputs(), paddle.to_tensor(np.array([1, 9, 12])))
    assert mlm.shape == [3, 50] and nsp.shape == [2, 2]
    names = dict(model.named_parameters())
    assert not any(n.startswith("mlm_out") for n in names)  # projection is the embedding matrix
    word = names["ernie.word_emb.weight"].numpy()
    assert abs(word).max() <= 2 * CONFIG.initializer_range + 1e-6  # truncated at 2 std
    assert 0.01 < word.std() < 0.02
    assert np.all(names["ernie.encoder.layers.0.linear1.bias"].numpy() == 0)
    assert np.all(names["ernie.encoder.layers.0.norm1.weight"].numpy() == 1)
    untied = ErnieForPretraining(CONFIG, weight_sharing=False)
    assert "mlm_out.weight" in dict(untied.named_parameters())


def test_padding_does_not_change_the_real_positions():
    paddle.seed(2)
    model = ErnieForPretraining(CONFIG)
    model.eval()
    src, sent, pos = _inputs()
    seq, _ = model.ernie(src[:1, :6], sent[:1, :6], pos[:1, :6])
    padded, _ = model.ernie(src[:1], sent[:1], pos[:1])
    np.testing.assert_allclose(seq.numpy(), padded.numpy()[:, :6], rtol=1e-4, atol=1e-5)


def test_post_layer_norm_encoder():
    layer = ErnieForPretraining(CONFIG).ernie.encoder.layers[0]
    assert layer.normalize_before is False


def test_loss_is_mlm_plus_nsp_and_accuracy():
    mlm_logits = paddle.to_tensor(np.log(np.array([[0.5, 0.5], [0.25, 0.75]], dtype="float32")))
    nsp_logits = paddle.to_tensor(np.array([[0.0, 10.0], [10.0, 0.0]], dtype="float32"))
    total, mlm, acc = pretraining_loss(
        mlm_logits, nsp_logits, paddle.to_tensor([0, 1]), paddle.to_tensor([1, 1])
    )
    expected_mlm = -(np.log(0.5) + np.log(0.75)) / 2
    assert float(mlm) == pytest.approx(expected_mlm, rel=1e-5)
    assert float(acc) == 0.5
    assert float(total) > float(mlm)


def test_no_decay_covers_layer_norm_and_biases_only():
    model = ErnieForPretraining(CONFIG)
    exempt = {n for n, _ in model.named_parameters() if no_decay(n)}
    assert "ernie.emb_norm.weight" in exempt and "mlm_bias" in exempt
    assert "ernie.encoder.layers.1.self_attn.q_proj.bias" in exempt
    assert not any(n.endswith("weight") and "norm" not in n for n in exempt)
