"""`ernie-sm train`: ERNIE 1.0 pretraining, the entrypoint of the training image.

Reads SageMaker's layout (training/layout.py), trains, validates, checkpoints and
leaves an inference model in SM_MODEL_DIR. One optimizer step, top to bottom, is in
`train()`: seed dropout for this step, forward and backward over the micro-batches,
clip, step, then log / validate / checkpoint when their intervals come round.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import signal
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import numpy as np
import paddle

from training import hyperparams, launch, metrics, presets
from training import layout as job_layout
from training.checkpoint import CheckpointManager, rename_optimizer_state
from training.config import load_config
from training.data import Batch, DataPosition, PretrainingData, read_filelist, validation_batches
from training.errors import ConfigError, TrainingError
from training.export import export_model, warm_start
from training.hyperparams import Hyperparameters
from training.layout import JobLayout
from training.model import ErnieForPretraining, no_decay, pretraining_loss
from training.vocab import Vocab, load_vocab

log = logging.getLogger("ernie")

EXIT_STOPPED = launch.STOPPED  # 128 + SIGTERM, what a process ended by SIGTERM returns


class Stopped(Exception):
    """SageMaker asked the job to stop (StopTrainingJob or a spot interruption)."""


class StopSignal:
    """Turns SIGTERM into a flag the loop checks between steps, so a checkpoint can be saved."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        log.warning("SIGTERM received: saving a checkpoint and stopping")
        self.requested = True


def main() -> int:
    _log_to_stdout()
    stop = StopSignal()
    output_dir = job_layout.output_dir()
    try:
        layout = job_layout.from_environment()
        hp = hyperparams.parse(layout.hyperparameters)
        envs = _trainer_environments(hp, layout)
        if envs:
            return _run_trainers(envs, output_dir)
        model_dir = train(layout, hp, stop)
    except Stopped:
        return EXIT_STOPPED
    except TrainingError as exc:
        return _fail(output_dir, str(exc))
    except Exception as exc:
        log.error("%s", traceback.format_exc())
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return _fail(
            output_dir, f"{type(exc).__name__}: {exc} (at {where.filename}:{where.lineno})"
        )
    if model_dir is not None:
        log.info("model saved to %s", model_dir)
    return 0


def _log_to_stdout() -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):  # importing paddle pointed the root logger at stderr
        if type(handler) is logging.StreamHandler and handler.stream is sys.stderr:
            root.removeHandler(handler)
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )


def _fail(output_dir: Path, reason: str) -> int:
    log.error("training failed: %s", reason)
    job_layout.write_failure(output_dir, reason)
    return 1


def _trainer_environments(hp: Hyperparameters, layout: JobLayout) -> list[dict[str, str]]:
    """The trainers this process must start, or [] when it is to train itself."""
    if launch.is_trainer():
        return []
    gpus = layout.num_gpus if hp.use_cuda else 0
    per_host = hp.trainers_per_host or max(gpus, 1)
    if len(layout.hosts) > 1 and not hp.is_distributed:
        raise ConfigError(
            f"is_distributed is false but the job has {len(layout.hosts)} hosts: set it to true "
            "or use one instance"
        )
    if not hp.is_distributed or per_host * len(layout.hosts) == 1:
        return []
    return launch.trainer_environments(layout.hosts, layout.current_host, per_host, gpus > 0)


def _run_trainers(envs: list[dict[str, str]], output_dir: Path) -> int:
    status = launch.run_trainers(envs)
    if status not in (0, EXIT_STOPPED) and not (output_dir / "failure").exists():
        return _fail(output_dir, f"a trainer process ended with status {status} and no reason")
    return status


def train(layout: JobLayout, hp: Hyperparameters, stop: StopSignal) -> Path | None:
    """Train on this process; returns the model folder (None on a rank that does not export)."""
    train_dir = layout.channel(job_layout.TRAIN)
    vocab_path = presets.locate(hp.vocab_path, train_dir, presets.VOCABS, "vocab_path")
    vocab = load_vocab(vocab_path)
    config = load_config(hp.ernie_config_path, train_dir, len(vocab))
    if hp.max_seq_len > config.max_position_embeddings:
        raise ConfigError(
            f"max_seq_len {hp.max_seq_len} exceeds the model's max_position_embeddings "
            f"{config.max_position_embeddings}"
        )
    train_shards = read_filelist(_resolve(hp.train_filelist, train_dir))
    valid_shards = _valid_shards(layout, hp)
    rank, world_size = _start_devices(hp)
    if rank != 0:  # one voice per job: SageMaker reads metrics from every trainer's output
        logging.getLogger().setLevel(logging.WARNING)

    paddle.seed(hp.random_seed)
    model = ErnieForPretraining(config, vocab.pad_id, hp.weight_sharing)
    schedule = paddle.optimizer.lr.LambdaDecay(
        hp.learning_rate, _linear_warmup_decay(hp.warmup_steps, hp.num_train_steps)
    )
    decayed = {p.name for n, p in model.named_parameters() if not no_decay(n)}
    optimizer = paddle.optimizer.AdamW(
        learning_rate=schedule,
        parameters=model.parameters(),
        weight_decay=hp.weight_decay,
        apply_decay_param_fun=lambda name: name in decayed,
        grad_clip=paddle.nn.ClipGradByGlobalNorm(hp.max_grad_norm),
    )
    amp_dtype = _amp_dtype(hp)
    scaler = paddle.amp.GradScaler(
        enable=amp_dtype == "float16",
        init_loss_scaling=hp.init_loss_scaling,
        incr_ratio=hp.incr_ratio,
        decr_ratio=hp.decr_ratio,
        incr_every_n_steps=hp.incr_every_n_steps,
        decr_every_n_nan_or_inf=hp.decr_every_n_nan_or_inf,
        use_dynamic_loss_scaling=hp.use_dynamic_loss_scaling,
    )

    checkpoints = CheckpointManager(layout.checkpoint_dir(hp.checkpoints), hp.keep_checkpoints)
    structured = {p.name: n for n, p in model.named_parameters()}
    step, position = _restore(checkpoints, model, optimizer, scaler, layout)
    trainer = paddle.DataParallel(model) if world_size > 1 else model
    # How shards become batches, for training and validation alike.
    reading = dict(
        vocab_size=config.vocab_size,
        max_seq_len=hp.max_seq_len,
        max_position=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size,
        batch_size=hp.batch_size,
        in_tokens=hp.in_tokens,
        seed=hp.random_seed,
    )
    data = PretrainingData(
        train_shards,
        vocab,
        **reading,
        rank=rank,
        world_size=world_size,
        num_workers=hp.num_workers,
        generate_neg_sample=hp.generate_neg_sample,
        epochs=hp.epoch,
    )
    log.info(
        "training from step %d of %d on %s (%s), %d trainer(s), %d train shard(s)",
        step,
        hp.num_train_steps,
        paddle.get_device(),
        amp_dtype or "float32",
        world_size,
        len(train_shards),
    )

    saved_step = step

    def save() -> None:
        nonlocal saved_step
        if rank == 0 and step != saved_step:
            saved_step = step
            meta = {"position": position.to_dict(), "config": asdict(config)}
            optimizer_state = rename_optimizer_state(optimizer.state_dict(), structured)
            trainer_state = {"optimizer": optimizer_state, "scaler": scaler.state_dict()}
            checkpoints.save(step, model.state_dict(), trainer_state, meta)

    tokens, window_start = 0, time.perf_counter()
    batches = data.batches(position)
    accumulation = hp.gradient_accumulation_steps
    with data:
        while step < hp.num_train_steps:
            if _stop_requested(stop, world_size):
                save()
                raise Stopped
            micro_batches = list(itertools.islice(batches, accumulation))
            if len(micro_batches) < accumulation:
                log.info("finished %d epoch(s) at step %d", hp.epoch, step)
                break
            # One optimizer step over the micro-batches; gradients sync on the last one only.
            step_loss = step_mlm = step_acc = 0.0
            position = micro_batches[-1][1]  # where the data stands once this step is done
            for micro, (batch, _) in enumerate(micro_batches):
                paddle.seed(_step_seed(hp.random_seed, rank, step, micro))  # this step's dropout
                last = micro == accumulation - 1
                with (
                    contextlib.nullcontext() if last or world_size == 1 else trainer.no_sync(),
                    paddle.amp.auto_cast(
                        enable=amp_dtype is not None, dtype=amp_dtype or "float16"
                    ),
                ):
                    loss, mlm_loss, nsp_acc = _losses(trainer, batch)
                    scaler.scale(loss / accumulation).backward()
                step_loss += loss.detach() / accumulation
                step_mlm += mlm_loss.detach() / accumulation
                step_acc += nsp_acc / accumulation
                tokens += batch.num_tokens
            scaler.step(optimizer)  # unscales, clips by global norm, skips on fp16 overflow
            scaler.update()
            optimizer.clear_grad()
            schedule.step()
            step += 1

            if step % hp.skip_steps == 0:
                elapsed = time.perf_counter() - window_start
                stats = metrics.TrainStats(
                    step=step,
                    epoch=position.epoch,
                    loss=float(step_loss),
                    mlm_loss=float(step_mlm),
                    nsp_acc=float(step_acc),
                    lr=optimizer.get_lr(),
                    tokens_per_sec=tokens * world_size / elapsed,
                )
                log.info(metrics.train_line(stats))
                tokens, window_start = 0, time.perf_counter()
            if valid_shards and step % hp.validation_steps == 0 and rank == 0:
                stats = _validate(model, valid_shards, vocab, reading, stop, step)
                log.info(metrics.valid_line(stats))
            if step % hp.save_steps == 0:
                save()

    if data.skipped_over_length:
        log.warning(
            "%d sample(s) longer than max_seq_len %d were left out of training",
            data.skipped_over_length,
            hp.max_seq_len,
        )
    if rank != 0:
        return None
    save()
    export_model(model, config, vocab_path, layout.model_dir)
    return layout.model_dir


def _validate(
    model: ErnieForPretraining,
    shards: list,
    vocab: Vocab,
    reading: dict,
    stop: StopSignal,
    step: int,
) -> metrics.ValidStats:
    """Loss over the whole valid channel, with the same masks every time."""
    model.eval()
    mlm_sum = nsp_sum = correct = masked = samples = 0.0
    with paddle.no_grad():
        for batch in validation_batches(shards, vocab, **reading):
            if stop.requested:
                break
            n_mask, n = len(batch.mask_label), len(batch.nsp_label)
            loss, mlm, acc = _losses(model, batch)
            mlm_sum += float(mlm) * n_mask
            nsp_sum += float(loss - mlm) * n
            correct += float(acc) * n
            masked += n_mask
            samples += n
    model.train()
    mlm_mean = mlm_sum / max(masked, 1)
    return metrics.ValidStats(
        step=step,
        loss=mlm_mean + nsp_sum / max(samples, 1),
        mlm_loss=mlm_mean,
        nsp_acc=correct / max(samples, 1),
    )


def _losses(
    model: paddle.nn.Layer, batch: Batch
) -> tuple[paddle.Tensor, paddle.Tensor, paddle.Tensor]:
    """Forward one batch; (total loss, MLM loss, NSP accuracy)."""
    mlm_logits, nsp_logits = model(
        paddle.to_tensor(batch.src_ids),
        paddle.to_tensor(batch.sent_ids),
        paddle.to_tensor(batch.pos_ids),
        paddle.to_tensor(batch.mask_pos),
    )
    labels = paddle.to_tensor(batch.mask_label), paddle.to_tensor(batch.nsp_label)
    return pretraining_loss(mlm_logits, nsp_logits, *labels)


def _resolve(path: str, channel_dir: Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else channel_dir / p


def _valid_shards(layout: JobLayout, hp: Hyperparameters) -> list:
    if job_layout.VALID not in layout.channels:
        log.warning("no 'valid' channel: training without validation")
        return []
    return read_filelist(_resolve(hp.valid_filelist, layout.channel(job_layout.VALID)))


def _linear_warmup_decay(warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def _step_seed(seed: int, rank: int, step: int, micro: int) -> int:
    """Dropout noise as a function of the step, so a resumed run repeats it exactly."""
    return int(np.random.SeedSequence([seed, rank, step, micro]).generate_state(1)[0])


def _amp_dtype(hp: Hyperparameters) -> str | None:
    """float16 / bfloat16 on a GPU when use_fp16 asks for it, else None (float32)."""
    if not hp.use_fp16:
        return None
    if not paddle.get_device().startswith("gpu"):
        log.warning("use_fp16 is ignored: mixed precision needs a GPU; training in float32")
        return None
    if hp.amp_dtype == "auto":
        return "bfloat16" if paddle.amp.is_bfloat16_supported() else "float16"
    return hp.amp_dtype


def _start_devices(hp: Hyperparameters) -> tuple[int, int]:
    """Pick the device and join the data-parallel group; returns (rank, world size)."""
    use_gpu = hp.use_cuda and paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count()
    if launch.is_trainer():
        paddle.distributed.init_parallel_env()
    rank, world_size = paddle.distributed.get_rank(), paddle.distributed.get_world_size()
    if use_gpu:
        paddle.set_device(f"gpu:{paddle.distributed.ParallelEnv().device_id}")
    else:
        paddle.set_device("cpu")
    return rank, world_size


def _stop_requested(stop: StopSignal, world_size: int) -> bool:
    """Whether to stop now; trainers agree, so none waits on the gradients of one that left."""
    if world_size == 1:
        return stop.requested
    flag = paddle.to_tensor([int(stop.requested)])
    paddle.distributed.all_reduce(flag, op=paddle.distributed.ReduceOp.MAX)
    return bool(flag.item())


def _restore(
    checkpoints: CheckpointManager,
    model: ErnieForPretraining,
    optimizer: paddle.optimizer.Optimizer,
    scaler: paddle.amp.GradScaler,
    layout: JobLayout,
) -> tuple[int, DataPosition]:
    """Resume from the newest complete checkpoint, else warm-start from the model channel."""
    checkpoint = checkpoints.load_latest()
    if checkpoint is not None:
        model.set_state_dict(checkpoint.model)
        unique = {n: p.name for n, p in model.named_parameters()}
        optimizer.set_state_dict(rename_optimizer_state(checkpoint.trainer["optimizer"], unique))
        scaler.load_state_dict(checkpoint.trainer["scaler"])
        log.info("resumed from %s", checkpoint.path)
        return checkpoint.meta["step"], DataPosition.from_dict(checkpoint.meta["position"])
    if job_layout.MODEL in layout.channels:
        warm_start(model, layout.channel(job_layout.MODEL))
    return 0, DataPosition(0, 0, 0)
