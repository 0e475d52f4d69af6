"""ERNIE: a post-LayerNorm transformer encoder with masked-LM and next-sentence heads (1.0)
and, with a task embedding (config.task_type_vocab_size > 0), one head per ERNIE 2.0 task."""

from __future__ import annotations

import paddle
import paddle.nn.functional as F
from ernie_sm.contract.tasks import IGNORE, KNOWLEDGE_MASKING, TASKS, Task
from ernie_sm.training.config import ErnieConfig
from paddle import nn

# Added to attention scores at padding; fits float16 unlike -inf.
PADDING_BIAS = -1e4


def _weight(config: ErnieConfig) -> paddle.ParamAttr:
    std = config.initializer_range
    # Truncated at two standard deviations, as the original initialiser did.
    init = nn.initializer.TruncatedNormal(mean=0.0, std=std, a=-2 * std, b=2 * std)
    return paddle.ParamAttr(initializer=init)


class ErnieModel(nn.Layer):
    """Embeddings (word + position + sentence type [+ task]), encoder, and tanh pooler on
    [CLS]."""

    def __init__(self, config: ErnieConfig, pad_id: int = 0) -> None:
        super().__init__()
        self.pad_id = pad_id
        h = config.hidden_size
        self.word_emb = nn.Embedding(config.vocab_size, h, weight_attr=_weight(config))
        self.pos_emb = nn.Embedding(config.max_position_embeddings, h, weight_attr=_weight(config))
        self.sent_emb = nn.Embedding(config.type_vocab_size, h, weight_attr=_weight(config))
        self.task_emb = (
            nn.Embedding(config.task_type_vocab_size, h, weight_attr=_weight(config))
            if config.task_type_vocab_size
            else None
        )
        self.emb_norm = nn.LayerNorm(h)
        self.emb_dropout = nn.Dropout(config.hidden_dropout_prob)
        layer = nn.TransformerEncoderLayer(
            d_model=h,
            nhead=config.num_attention_heads,
            dim_feedforward=4 * h,
            dropout=config.hidden_dropout_prob,
            activation=config.hidden_act,
            attn_dropout=config.attention_probs_dropout_prob,
            act_dropout=0.0,  # ERNIE has no dropout inside the feed-forward block
            normalize_before=False,  # post-LN: dropout, residual add, then LayerNorm
            weight_attr=_weight(config),
        )
        self.encoder = nn.TransformerEncoder(layer, config.num_hidden_layers)
        self.pooler = nn.Linear(h, h, weight_attr=_weight(config))

    def forward(
        self,
        src_ids: paddle.Tensor,
        sent_ids: paddle.Tensor,
        pos_ids: paddle.Tensor,
        task_id: int = 0,
    ) -> tuple[paddle.Tensor, paddle.Tensor]:
        """`task_id` tags every token when the model has a task embedding; inference and
        fine-tuning use knowledge masking's (0), as ERNIE 2.0's fine-tuning feeds zeros.
        (A literal default: paddle.jit.save cannot read a module constant here.)"""
        emb = self.word_emb(src_ids) + self.pos_emb(pos_ids) + self.sent_emb(sent_ids)
        if self.task_emb is not None:
            emb = emb + self.task_emb.weight[task_id]
        emb = self.emb_dropout(self.emb_norm(emb))
        # [B, 1, 1, L] bias broadcast over heads and query positions.
        padding = (src_ids == self.pad_id).astype(emb.dtype).unsqueeze([1, 2]) * PADDING_BIAS
        sequence = self.encoder(emb, src_mask=padding)
        pooled = F.tanh(self.pooler(sequence[:, 0]))
        return sequence, pooled


class ErnieForPretraining(nn.Layer):
    """ERNIE with the masked-LM head (projection tied to the word embeddings) and the NSP head,
    plus a linear head per other ERNIE 2.0 task when the model has a task embedding: on the
    pooled [CLS] output for a sentence-level task, on every token for a token-level one."""

    def __init__(self, config: ErnieConfig, pad_id: int = 0, weight_sharing: bool = True) -> None:
        super().__init__()
        self.config = config
        self.ernie = ErnieModel(config, pad_id)
        h = config.hidden_size
        self.mlm_transform = nn.Linear(h, h, weight_attr=_weight(config))
        self.mlm_act = getattr(F, config.hidden_act)
        self.mlm_norm = nn.LayerNorm(h)
        self.mlm_out = (
            None
            if weight_sharing
            else nn.Linear(h, config.vocab_size, weight_attr=_weight(config), bias_attr=False)
        )
        self.mlm_bias = self.create_parameter(
            [config.vocab_size], is_bias=True, default_initializer=nn.initializer.Constant(0.0)
        )
        self.nsp = nn.Linear(h, 2, weight_attr=_weight(config))
        new_tasks = [t for t in TASKS.values() if t != KNOWLEDGE_MASKING]
        self.task_heads = nn.LayerDict(
            {t.name: nn.Linear(h, t.num_classes, weight_attr=_weight(config)) for t in new_tasks}
            if config.task_type_vocab_size
            else {}
        )

    def mlm_logits(self, hidden: paddle.Tensor) -> paddle.Tensor:
        """Vocabulary logits for hidden states of any leading shape."""
        x = self.mlm_norm(self.mlm_act(self.mlm_transform(hidden)))
        if self.mlm_out is None:
            logits = paddle.matmul(x, self.ernie.word_emb.weight, transpose_y=True)
        else:
            logits = self.mlm_out(x)
        return logits + self.mlm_bias

    def forward(
        self,
        src_ids: paddle.Tensor,
        sent_ids: paddle.Tensor,
        pos_ids: paddle.Tensor,
        mask_pos: paddle.Tensor | None = None,
        task: Task = KNOWLEDGE_MASKING,
    ) -> tuple[paddle.Tensor | None, paddle.Tensor]:
        """MLM logits at `mask_pos` (flat indices into batch x length; None without), and
        the task's logits: NSP for knowledge masking, else its head's ([B, L, C] for a
        token-level task)."""
        sequence, pooled = self.ernie(src_ids, sent_ids, pos_ids, task.id)
        mlm = None
        if mask_pos is not None:
            flat = sequence.reshape([-1, sequence.shape[-1]])
            mlm = self.mlm_logits(paddle.gather(flat, mask_pos))
        if task == KNOWLEDGE_MASKING:
            return mlm, self.nsp(pooled)
        return mlm, self.task_heads[task.name](sequence if task.token_level else pooled)


class ErnieClassifier(nn.Layer):
    """ERNIE for classification, as ERNIE's fine-tuning tasks build it: the encoder's pooled
    [CLS] output, dropout, and a linear layer to one logit per label."""

    def __init__(self, ernie: ErnieModel, config: ErnieConfig, num_labels: int) -> None:
        super().__init__()
        self.ernie = ernie
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, num_labels, weight_attr=_weight(config))

    def forward(
        self, src_ids: paddle.Tensor, sent_ids: paddle.Tensor, pos_ids: paddle.Tensor
    ) -> paddle.Tensor:
        _, pooled = self.ernie(src_ids, sent_ids, pos_ids)
        return self.classifier(self.dropout(pooled))


class ClassifierInference(nn.Layer):
    """What serving gets of a fine-tuned classifier: token ids in, the softmax probabilities
    of the labels out ([batch, num_labels], float32)."""

    def __init__(self, model: ErnieClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, src_ids: paddle.Tensor, sent_ids: paddle.Tensor, pos_ids: paddle.Tensor
    ) -> paddle.Tensor:
        logits = self.model(src_ids, sent_ids, pos_ids)
        return F.softmax(logits.astype("float32"), axis=-1)


def pretraining_loss(
    mlm_logits: paddle.Tensor,
    nsp_logits: paddle.Tensor,
    mask_label: paddle.Tensor,
    nsp_label: paddle.Tensor,
) -> tuple[paddle.Tensor, paddle.Tensor, paddle.Tensor]:
    """Mean MLM cross-entropy + mean NSP cross-entropy; returns (total, mlm, nsp accuracy)."""
    # Losses in float32 even under AMP: the softmax over the vocab is where fp16 overflows.
    mlm = F.cross_entropy(mlm_logits.astype("float32"), mask_label.unsqueeze(-1))
    nsp = F.cross_entropy(nsp_logits.astype("float32"), nsp_label.unsqueeze(-1))
    accuracy = (nsp_logits.argmax(-1) == nsp_label).astype("float32").mean()
    return mlm + nsp, mlm, accuracy


def task_loss(logits: paddle.Tensor, label: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
    """Mean cross-entropy of a task head over its labelled rows or tokens (IGNORE is not
    scored); returns (loss, accuracy)."""
    flat = logits.astype("float32").reshape([-1, logits.shape[-1]])
    target = label.reshape([-1])
    scored = target != IGNORE
    count = scored.astype("float32").sum()
    losses = F.cross_entropy(flat, target.clip(min=0).unsqueeze(-1), reduction="none")
    loss = (losses.squeeze(-1) * scored.astype("float32")).sum() / count.clip(min=1)
    right = ((flat.argmax(-1) == target) & scored).astype("float32").sum()
    return loss, right / count.clip(min=1)


class ErnieInference(nn.Layer):
    """What goes into SM_MODEL_DIR: token ids in, MLM log-probabilities and NSP probabilities out."""

    def __init__(self, model: ErnieForPretraining) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, src_ids: paddle.Tensor, sent_ids: paddle.Tensor, pos_ids: paddle.Tensor
    ) -> tuple[paddle.Tensor, paddle.Tensor]:
        sequence, pooled = self.model.ernie(src_ids, sent_ids, pos_ids)
        mlm = F.log_softmax(self.model.mlm_logits(sequence), axis=-1)
        nsp = F.softmax(self.model.nsp(pooled), axis=-1)
        return mlm, nsp


class ErnieFillMask(nn.Layer):
    """The served fill-mask model: the top `top_k` softmax probabilities and their token ids
    at `mask_index` (flat positions into batch x length) only, never the whole vocab."""

    def __init__(self, model: ErnieForPretraining, top_k: int) -> None:
        super().__init__()
        self.model = model
        self.top_k = top_k

    def forward(
        self,
        src_ids: paddle.Tensor,
        sent_ids: paddle.Tensor,
        pos_ids: paddle.Tensor,
        mask_index: paddle.Tensor,
    ) -> tuple[paddle.Tensor, paddle.Tensor]:
        sequence, _ = self.model.ernie(src_ids, sent_ids, pos_ids)
        flat = sequence.reshape([-1, sequence.shape[-1]])
        logits = self.model.mlm_logits(paddle.gather(flat, mask_index))
        scores, token_ids = paddle.topk(F.softmax(logits.astype("float32"), axis=-1), self.top_k)
        return scores, token_ids


class ErnieFeatures(nn.Layer):
    """The served feature-extraction model: the encoder's last hidden states [B, L, H];
    the server pools them ([CLS] or the mean over non-padding tokens)."""

    def __init__(self, ernie: ErnieModel) -> None:
        super().__init__()
        self.ernie = ernie

    def forward(
        self, src_ids: paddle.Tensor, sent_ids: paddle.Tensor, pos_ids: paddle.Tensor
    ) -> paddle.Tensor:
        sequence, _ = self.ernie(src_ids, sent_ids, pos_ids)
        return sequence.astype("float32")


def no_decay(name: str) -> bool:
    """Parameters exempt from weight decay: LayerNorm and every bias."""
    return "norm" in name or name.endswith("bias")
