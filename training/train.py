"""`ernie-sm train`: ERNIE pretraining, the entrypoint of the training image.

Reads SageMaker's layout (training/layout.py), trains, validates, checkpoints and
leaves an inference model in SM_MODEL_DIR. `train()` reads top to bottom: set up the
job (_setup: vocab, config, shards, devices) and the model with its optimizer, restored
or warm-started (_build_learner); then each step draws the micro-batches' tasks and
batches, takes one optimizer step (_train_step: seed dropout, forward, backward, clip,
step), and logs (_log_window), validates (_validate) and checkpoints (_save) when their
intervals come round; _finish saves the last step and exports the model. ERNIE 1.0
(hyperparameter `tasks` empty) has one task, knowledge masking; ERNIE 2.0 trains the
`tasks` named, each from its own stream of the channel (contract/tasks.py).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import signal
import sys
import time
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import paddle
from ernie_sm.contract import channels, hyperparams, metrics, presets
from ernie_sm.contract import tasks as job_tasks
from ernie_sm.contract.errors import ConfigError, DataError, TrainingError
from ernie_sm.contract.hyperparams import Hyperparameters
from ernie_sm.contract.tasks import KNOWLEDGE_MASKING, TASKS, Task
from ernie_sm.text.vocab import Vocab, load_vocab
from ernie_sm.training import flops, launch
from ernie_sm.training import layout as job_layout
from ernie_sm.training.checkpoint import (
    META_FILE,
    Checkpoint,
    CheckpointManager,
    rename_optimizer_state,
)
from ernie_sm.training.config import ErnieConfig, load_config
from ernie_sm.training.data import (
    Batch,
    DataPosition,
    PretrainingData,
    ReadConfig,
    Shard,
    ShardLimits,
    parse_shard,
    read_filelist,
    validation_batches,
)
from ernie_sm.training.export import export_model, warm_start
from ernie_sm.training.host_reports import HostReports
from ernie_sm.training.layout import JobLayout
from ernie_sm.training.model import ErnieForPretraining, no_decay
from ernie_sm.training.multitask import Figures, TaskFigures, TaskMix, forward
from ernie_sm.training.schedule import SCHEDULES

log = logging.getLogger("ernie")

EXIT_STOPPED = launch.STOPPED  # 128 + SIGTERM, what a process ended by SIGTERM returns
_LAST_STEP = [time.monotonic()]  # when the last optimizer step (or the start) ended


class Stopped(Exception):
    """SageMaker asked the job to stop (StopTrainingJob or a spot interruption)."""


class StopSignal:
    """Turns SIGTERM into a flag the loop checks between steps, so a checkpoint can be saved."""

    def __init__(self, action: str = "saving a checkpoint and stopping") -> None:
        self.requested = False
        self.action = action
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        log.warning("SIGTERM received: %s", self.action)
        self.requested = True


def main() -> int:
    if (reason := job_layout.outside_a_job()) is not None:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    log_to_stdout()
    stop = StopSignal()
    output_dir = job_layout.output_dir()
    try:
        layout = job_layout.from_environment()
        hp = hyperparams.parse(layout.hyperparameters)
        envs = _trainer_environments(hp, layout)
        if envs:
            return _run_trainers(envs, output_dir, layout)
        model_dir = train(layout, hp, stop)
    except Stopped:
        return EXIT_STOPPED
    except TrainingError as exc:
        return _fail(output_dir, str(exc))
    except Exception as exc:
        log.error("%s", traceback.format_exc())
        where = traceback.extract_tb(exc.__traceback__)[-1]
        crash = f"{type(exc).__name__}: {exc} (at {where.filename}:{where.lineno})"
        lost = launch.peer_lost(crash)
        if lost is not None:
            lost += f" ({time.monotonic() - _LAST_STEP[0]:.0f} s after this trainer's last step)"
        return _fail(output_dir, lost or crash)
    if model_dir is not None:
        log.info("model saved to %s", model_dir)
    return 0


def log_to_stdout() -> None:
    """Log lines to stdout (SageMaker reads metrics there), each naming its trainer."""
    root = logging.getLogger()
    for handler in list(root.handlers):  # importing paddle pointed the root logger at stderr
        if type(handler) is logging.StreamHandler and handler.stream is sys.stderr:
            root.removeHandler(handler)
    # Trainers of one job share its log: each line says whose it is.
    who = f"[trainer {os.environ[launch.TRAINER_ID_ENV]}] " if launch.is_trainer() else ""
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format=f"%(asctime)s %(levelname)s {who}%(message)s"
    )


def _fail(output_dir: Path, reason: str) -> int:
    log.error("training failed: %s", reason)
    if launch.is_trainer():  # the entrypoint that started it reports the first failure
        output_dir = launch.failure_dir(output_dir, os.environ[launch.TRAINER_ID_ENV])
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
    try:
        ports = launch.trainer_ports(layout.hosts, per_host)
    except launch.PortError as exc:
        raise TrainingError(str(exc)) from None
    log.info("trainer ports: %s", ", ".join(map(str, ports)))
    return launch.trainer_environments(layout.hosts, layout.current_host, per_host, gpus > 0, ports)


def _run_trainers(envs: list[dict[str, str]], output_dir: Path, layout: JobLayout) -> int:
    reports = HostReports(layout.hosts, layout.current_host) if len(layout.hosts) > 1 else None
    try:
        status, reason = launch.run_trainers(envs, output_dir)
        if reason is not None and reports is not None:
            reason = _across_hosts(reason, reports)
    finally:
        if reports is not None:
            reports.close()
    return _fail(output_dir, reason) if reason is not None else status


def _across_hosts(reason: str, reports: HostReports) -> str:
    """A cause is told to the other hosts; a reaction to a peer on another host reports
    the cause that host told, when it comes."""
    if launch.PEER_LOST not in reason:
        reports.tell(reason)
        return reason
    cause = reports.cause()
    return f"{cause} (on {reports.current}: {reason})" if cause else reason


def train(layout: JobLayout, hp: Hyperparameters, stop: StopSignal) -> Path | None:
    """Train on this process; returns the model folder (None on a rank that does not export)."""
    job = _setup(layout, hp)
    learner, progress = _build_learner(job)
    data = {
        task.name: PretrainingData(
            job.train_shards[task.name], job.vocab, job.read, task, job.rank, job.world_size
        )
        for task in job.tasks
    }
    _log_start(job, progress, learner.amp_dtype)
    peak = _dense_peak(learner.amp_dtype)
    mix, window = TaskMix(job.weights, hp.random_seed), _Window(job.tasks)
    divergence = _DivergenceWatch(hp, learner.amp_dtype)
    if progress.pending_validation is not None:
        log.info("running the validation of step %d, which a stop cut short", progress.step)
        _validate(job, learner.model, progress, stop)
    with contextlib.ExitStack() as streams_open:
        streams = {
            name: streams_open.enter_context(stream).batches(progress.positions[name])
            for name, stream in data.items()
        }
        while progress.step < hp.num_train_steps:
            if _any_rank(stop.requested, job.world_size):
                _save(job, learner, progress)
                raise Stopped
            micro_tasks = [
                mix.draw(progress.step, m) for m in range(hp.gradient_accumulation_steps)
            ]
            micro_batches = [next(streams[task.name], None) for task in micro_tasks]
            if None in micro_batches:
                break  # the data ran out: reported by _finish
            micro = list(zip(micro_tasks, micro_batches, strict=True))
            loss = _train_step(job, learner, progress, micro, window)
            # Before anything is logged or saved: a diverged model must not replace a good
            # checkpoint (every rank agrees, as rank 0 alone saves).
            divergence.check(loss, progress.step, progress.saved_step, job.world_size)

            if progress.step % hp.skip_steps == 0:
                _log_window(job, progress, window, loss, learner.optimizer.get_lr(), peak)
                window = _Window(job.tasks)
            if job.valid_shards and progress.step % hp.validation_steps == 0:
                _validate(job, learner.model, progress, stop)
            if progress.step % hp.save_steps == 0:
                _save(job, learner, progress)
    return _finish(job, learner, progress, data)


@dataclass(frozen=True)
class _Job:
    """What this process trains, on what, and where it stands among the trainers: read
    and checked once, before any paid step (_setup)."""

    layout: JobLayout
    hp: Hyperparameters
    vocab: Vocab
    vocab_path: Path
    config: ErnieConfig
    weights: dict[str, float]  # task -> the weight it is drawn by (ERNIE 1.0: knowledge masking)
    read: ReadConfig  # how shards become batches, for training and validation alike
    train_shards: dict[str, list[Shard]]
    valid_shards: dict[str, list[Shard]]  # of the tasks the valid channel holds; {}: none
    rank: int
    world_size: int

    @property
    def tasks(self) -> list[Task]:
        """The tasks trained, in the order of `weights`."""
        return [TASKS[name] for name in self.weights]

    @property
    def checkpoints(self) -> CheckpointManager:
        """The checkpoint folder (the manager holds nothing but the folder and `keep`)."""
        return CheckpointManager(
            self.layout.checkpoint_dir(self.hp.checkpoints), self.hp.keep_checkpoints
        )


@dataclass(frozen=True)
class _Learner:
    """The model and what updates it; `parallel` is the model the steps run (the model
    itself, or its DataParallel wrapper when there are several trainers)."""

    model: ErnieForPretraining
    parallel: paddle.nn.Layer
    optimizer: paddle.optimizer.Optimizer
    schedule: paddle.optimizer.lr.LRScheduler
    scaler: paddle.amp.GradScaler
    amp_dtype: str | None  # float16 / bfloat16 under mixed precision, None in float32


@dataclass
class _Progress:
    """Where training stands: the steps taken, each task stream's data position, the step
    last saved, and the step whose validation a stop cut short, which is owed (None: none
    is). A checkpoint records them all."""

    step: int
    positions: dict[str, DataPosition]
    saved_step: int
    pending_validation: int | None


class _Window:
    """What the steps since the last [train] line did: each task's figures, the tokens
    (real and padded) and model FLOPs computed on, and when the window began."""

    def __init__(self, tasks: list[Task]) -> None:
        self.figures = TaskFigures(tasks)
        self.tokens, self.padded, self.work = 0, 0, 0
        self.start = time.perf_counter()

    def add(self, task: Task, figures: Figures, batch: Batch, work: int) -> None:
        self.figures.add(task, figures)
        self.tokens += batch.num_tokens
        self.padded += batch.src_ids.size
        self.work += work


def _setup(layout: JobLayout, hp: Hyperparameters) -> _Job:
    """Read the vocab, the model config and every task's shards (the valid channel's
    parsed once, so a bad one fails now), join the trainers and check the model fits."""
    train_dir = layout.channel(channels.TRAIN)
    vocab_path = presets.locate(hp.vocab_path, train_dir, presets.VOCABS, "vocab_path")
    vocab = load_vocab(vocab_path)
    weights = hp.tasks or {KNOWLEDGE_MASKING.name: 1.0}
    tasks = [TASKS[name] for name in weights]
    config = _task_embedding(load_config(hp.ernie_config_path, train_dir, len(vocab)), hp)
    if hp.max_seq_len > config.max_position_embeddings:
        raise ConfigError(
            f"max_seq_len {hp.max_seq_len} exceeds the model's max_position_embeddings "
            f"{config.max_position_embeddings}"
        )
    read = ReadConfig.of_job(hp, config)
    train_shards = _task_shards(train_dir, hp.train_filelist, tasks, channels.TRAIN)
    valid_shards = _valid_shards(layout, hp, tasks)
    for name, shards in valid_shards.items():
        _check_valid_channel(shards, read.limits(TASKS[name]))
    rank, world_size = _start_devices(hp)
    _check_model_fits(config, hp.weight_sharing, hp.ernie_config_path)
    return _Job(
        layout=layout,
        hp=hp,
        vocab=vocab,
        vocab_path=vocab_path,
        config=config,
        weights=weights,
        read=read,
        train_shards=train_shards,
        valid_shards=valid_shards,
        rank=rank,
        world_size=world_size,
    )


def _build_learner(job: _Job) -> tuple[_Learner, _Progress]:
    """The model, its AdamW, schedule (lr_scheduler) and loss scaler, restored from the
    newest checkpoint or warm-started (_restore), then wrapped for data parallelism."""
    hp, config = job.hp, job.config
    paddle.seed(hp.random_seed)
    try:
        model = ErnieForPretraining(config, job.vocab.pad_id, hp.weight_sharing)
    except MemoryError as exc:  # what the estimate leaves out, or memory others hold
        raise ConfigError(
            f"model config {hp.ernie_config_path} (vocab_size {config.vocab_size}, hidden_size "
            f"{config.hidden_size}, num_hidden_layers {config.num_hidden_layers}) does not fit "
            f"in the memory of {paddle.device.get_device()}: {exc}"
        ) from None
    factor = SCHEDULES[hp.lr_scheduler](hp.warmup_steps, hp.num_train_steps)
    schedule = paddle.optimizer.lr.LambdaDecay(hp.learning_rate, factor)
    decayed = {p.name for n, p in model.named_parameters() if not no_decay(n)}
    optimizer = paddle.optimizer.AdamW(
        learning_rate=schedule,
        parameters=model.parameters(),
        weight_decay=hp.weight_decay,
        apply_decay_param_fun=lambda name: name in decayed,
        grad_clip=paddle.nn.ClipGradByGlobalNorm(hp.max_grad_norm),
    )
    _create_optimizer_state(optimizer, model)
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
    progress = _restore(job, model, optimizer, scaler)
    # Each micro-batch trains one task's head: the others get no gradient that step.
    unused = bool(config.task_type_vocab_size)
    parallel = (
        paddle.DataParallel(model, find_unused_parameters=unused) if job.world_size > 1 else model
    )
    return _Learner(model, parallel, optimizer, schedule, scaler, amp_dtype), progress


def _log_start(job: _Job, progress: _Progress, amp_dtype: str | None) -> None:
    log.info(
        "training from step %d of %d on %s (%s), %d trainer(s), %s",
        progress.step,
        job.hp.num_train_steps,
        paddle.get_device(),
        amp_dtype or "float32",
        job.world_size,
        ", ".join(f"{len(job.train_shards[t.name])} {t.name} shard(s)" for t in job.tasks),
    )
    if job.hp.tasks:
        log.info("tasks drawn by weight: %s", job_tasks.format_weights(job.weights))


def _train_step(
    job: _Job,
    learner: _Learner,
    progress: _Progress,
    micro: list[tuple[Task, tuple[Batch, DataPosition]]],
    window: _Window,
) -> float:
    """One optimizer step over the micro-batches, each of its drawn task; gradients sync on
    the last one only. Returns the step's loss, the sum of its micro-batches' weighted
    losses."""
    hp, accumulation = job.hp, len(micro)
    step_loss = 0.0
    for m, (task, (batch, position)) in enumerate(micro):
        progress.positions[task.name] = position  # where its data stands after this step
        paddle.seed(_step_seed(hp.random_seed, job.rank, progress.step, m))  # its dropout
        last = m == accumulation - 1
        with (
            contextlib.nullcontext() if last or job.world_size == 1 else learner.parallel.no_sync(),
            paddle.amp.auto_cast(
                enable=learner.amp_dtype is not None, dtype=learner.amp_dtype or "float16"
            ),
        ):
            loss, figures = forward(learner.parallel, batch, task)
            loss = loss * hp.task_loss_weights.get(task.name, 1.0) / accumulation
            learner.scaler.scale(loss).backward()
        step_loss += loss.detach()
        window.add(task, figures, batch, _model_flops(job.config, batch, task))
    learner.scaler.step(learner.optimizer)  # unscales, clips by global norm, skips on overflow
    learner.scaler.update()
    learner.optimizer.clear_grad(set_to_zero=False)  # None: a head not drawn is not stepped
    learner.schedule.step()
    progress.step += 1
    _LAST_STEP[0] = time.monotonic()
    return float(step_loss)


def _log_window(
    job: _Job, progress: _Progress, window: _Window, loss: float, lr: float, peak: float | None
) -> None:
    """The [train], [task] and [flops] lines of the window ending at this step (`loss` is
    its last step's): this rank's window speaks for all, and rank 0 alone prints them, as
    SageMaker reads metrics from every trainer's output."""
    elapsed = time.perf_counter() - window.start
    means = window.figures.means()
    masking = means.get(KNOWLEDGE_MASKING.name, {})
    stats = metrics.TrainStats(
        step=progress.step,
        epoch=progress.positions[job.tasks[0].name].epoch,
        loss=loss,
        mlm_loss=masking.get("mlm_loss"),
        nsp_acc=masking.get("nsp_acc"),
        lr=lr,
        tokens_per_sec=window.tokens * job.world_size / elapsed,
    )
    usage = metrics.FlopsStats(
        progress.step,
        window.work * job.world_size / elapsed,
        window.tokens / window.padded,
        flops.utilisation(window.work / elapsed, peak),
    )
    if job.rank == 0:
        log.info(metrics.train_line(stats))
        for name, figures in means.items() if job.hp.tasks else ():
            log.info(metrics.task_line(progress.step, name, figures["loss"], figures["acc"]))
        log.info(metrics.flops_line(usage))


def _save(job: _Job, learner: _Learner, progress: _Progress) -> None:
    """Checkpoint this step, unless it is saved already. Every rank calls it at the same
    steps: each data position is valid only for its rank, and rank 0 saves them all (the
    others wait in the next collective, which NCCL allows 30 minutes)."""
    if progress.step == progress.saved_step:
        return
    progress.saved_step = progress.step
    flat = [v for name in job.weights for v in progress.positions[name].to_dict().values()]
    gathered = _every_rank(flat, job.world_size)
    if job.rank != 0:
        return
    saved = {
        name: [DataPosition(*r[3 * i : 3 * i + 3]).to_dict() for r in gathered]
        for i, name in enumerate(job.weights)
    }
    meta = (
        {"task_positions": saved} if job.hp.tasks else {"positions": saved[KNOWLEDGE_MASKING.name]}
    )
    meta["config"] = asdict(job.config)
    if progress.pending_validation == progress.step:
        meta[VALIDATION_PENDING] = True
    structured = {p.name: n for n, p in learner.model.named_parameters()}
    optimizer_state = rename_optimizer_state(learner.optimizer.state_dict(), structured)
    trainer_state = {"optimizer": optimizer_state, "scaler": learner.scaler.state_dict()}
    job.checkpoints.save(progress.step, learner.model.state_dict(), trainer_state, meta)


def _finish(
    job: _Job, learner: _Learner, progress: _Progress, data: dict[str, PretrainingData]
) -> Path | None:
    """Save the last step and export the model (rank 0); a stop that cut the last step's
    validation short exits as a stop (the resumed job validates, then exports), and data
    that ran out before num_train_steps fails the job."""
    hp = job.hp
    skipped = sum(stream.skipped_over_length for stream in data.values())
    if skipped:
        log.warning(
            "%d sample(s) longer than max_seq_len %d were left out of training",
            skipped,
            hp.max_seq_len,
        )
    _save(job, learner, progress)
    if progress.pending_validation is not None:  # the last step's, cut by a stop
        raise Stopped
    if progress.step < hp.num_train_steps:
        raise TrainingError(_ran_out(hp, progress.step, skipped))
    if job.rank != 0:
        log.info("finished at step %d; rank 0 exports the model", progress.step)
        return None
    export_model(learner.model, job.config, job.vocab_path, job.layout.model_dir)
    return job.layout.model_dir


def _ran_out(hp: Hyperparameters, step: int, skipped: int) -> str:
    """Why a job that the data ran out on fails: a model not trained as asked is no result."""
    if step == 0:
        why = (
            f"no sample of the train channel is at most max_seq_len {hp.max_seq_len} tokens "
            f"({skipped} longer ones were left out)"
            if skipped
            else f"the train channel gives fewer than gradient_accumulation_steps "
            f"({hp.gradient_accumulation_steps}) batches"
        )
        return f"no training step was taken: {why}"
    return (
        f"the training data ran out after {hp.epoch} epoch(s) at step {step} of "
        f"num_train_steps {hp.num_train_steps}; the learning rate decays over "
        "num_train_steps, so this model is not the one asked for. Raise epoch or lower "
        f"num_train_steps (a checkpoint at step {step} lets a new job continue)"
    )


class _DivergenceWatch:
    """Fails the job on a non-finite loss. Under float16 with dynamic loss scaling an
    overflow is the scaler's cue to shrink the scale and skip the step, so the loss must
    stay non-finite for as many steps as the scaler takes to shrink it to 1 first."""

    def __init__(self, hp: Hyperparameters, amp_dtype: str | None) -> None:
        self.patience = 1
        if amp_dtype == "float16" and hp.use_dynamic_loss_scaling and hp.decr_ratio < 1:
            shrinks = math.ceil(math.log(max(hp.init_loss_scaling, 1)) / -math.log(hp.decr_ratio))
            self.patience = hp.decr_every_n_nan_or_inf * shrinks + 1
        self.bad_steps = 0

    def check(self, loss: float, step: int, saved_step: int, world_size: int) -> None:
        self.bad_steps = self.bad_steps + 1 if not math.isfinite(loss) else 0
        if _any_rank(self.bad_steps >= self.patience, world_size):
            raise TrainingError(
                f"training diverged: the loss is {loss} at step {step}"
                + (f" and the {self.bad_steps - 1} before it" if self.bad_steps > 1 else "")
                + "; nothing of it was saved (the newest checkpoint is from step "
                f"{saved_step}). Lower learning_rate or max_grad_norm, or raise warmup_steps"
            )


def _validate(job: _Job, model: ErnieForPretraining, progress: _Progress, stop: StopSignal) -> None:
    """Validate the model of this step and log each task's figures over its whole valid
    set, with the same masks every time, each rank scoring every world_size-th batch (so
    none waits on another's pass). A pass a stop cuts short logs nothing and is owed (and
    saved so); one that met no sample logs nothing either (nothing was measured)."""
    figures = TaskFigures([TASKS[name] for name in job.valid_shards])
    cut = False
    model.eval()
    with paddle.no_grad():
        for name, task_shards in job.valid_shards.items():
            task = TASKS[name]
            batches = validation_batches(task_shards, job.vocab, job.read, task)
            for batch in itertools.islice(batches, job.rank, None, job.world_size):
                if stop.requested:
                    cut = True
                    break
                figures.add(task, forward(model, batch, task)[1])
    model.train()
    means = figures.means(job.world_size)
    cut = _any_rank(cut, job.world_size)
    progress.pending_validation = progress.step if cut else None
    if means and not cut and job.rank == 0:
        _log_validation(progress.step, means, bool(job.hp.tasks))


def _log_validation(step: int, valid: dict[str, dict[str, float]], per_task: bool) -> None:
    masking = valid.get(KNOWLEDGE_MASKING.name)
    if masking is not None:
        stats = metrics.ValidStats(step, masking["loss"], masking["mlm_loss"], masking["nsp_acc"])
        log.info(metrics.valid_line(stats))
    for name, figures in valid.items() if per_task else ():
        log.info(metrics.valid_task_line(step, name, figures["loss"], figures["acc"]))


def _task_embedding(config: ErnieConfig, hp: Hyperparameters) -> ErnieConfig:
    """ERNIE 2.0 (`tasks` set) tags inputs with a task embedding: one row per task unless
    the config gives the size, which must then cover every task's id."""
    if not hp.tasks:
        return config
    if not config.task_type_vocab_size:
        return replace(config, task_type_vocab_size=job_tasks.NUM_TASK_TYPES)
    needed = max(TASKS[name].id for name in hp.tasks) + 1
    if config.task_type_vocab_size < needed:
        raise ConfigError(
            f"ernie_config's task_type_vocab_size {config.task_type_vocab_size} has no row for "
            f"task id {needed - 1} of tasks {hp.tasks}: it must be at least {needed} "
            f"({job_tasks.NUM_TASK_TYPES} covers every task)"
        )
    return config


def _task_shards(
    channel: Path, filelist: str, tasks: list[Task], channel_name: str
) -> dict[str, list[Shard]]:
    """Each task's shards in a channel, which must declare the task (contract/tasks.py)."""
    version, declared = _declared(channel, channel_name)
    missing = [t.name for t in tasks if t.name not in declared]
    if missing:
        raise ConfigError(
            f"the {channel_name} channel holds no samples of {', '.join(missing)}: it is a format "
            f"{version} dataset of {', '.join(declared)}. Prepare the corpus with "
            f"`ernie-sm prepare --tasks {','.join(missing)}`, or drop them from tasks"
        )
    return {
        t.name: read_filelist(_resolve(filelist, job_tasks.task_folder(channel, t))) for t in tasks
    }


def _declared(channel: Path, channel_name: str) -> tuple[int, list[str]]:
    """The format version and tasks a channel declares (contract/tasks.py)."""
    try:
        return job_tasks.dataset_tasks(channel)
    except ValueError as exc:
        raise ConfigError(f"the {channel_name} channel: {exc}") from None


def _model_flops(config: ErnieConfig, batch: Batch, task: Task) -> int:
    """The batch's training FLOPs: the encoder, the masked LM on the masked positions (none
    outside knowledge masking), and the task's head (NSP for knowledge masking)."""
    rows, length = batch.src_ids.shape
    head_rows = rows * length if task.token_level else rows
    head = flops.Matmul(head_rows, config.hidden_size, task.num_classes)
    return flops.training_flops(config, rows, length, batch.mask_pos.size, [head])


def _dense_peak(amp_dtype: str | None) -> float | None:
    """The dense peak FLOP/s of this trainer's GPU that MFU is measured against, logged;
    None on a CPU or a GPU or precision flops.PEAKS does not list."""
    device, precision = paddle.get_device(), amp_dtype or "float32"
    gpu = paddle.device.cuda.get_device_name() if device.startswith("gpu") else None
    peak = flops.peak_flops(gpu, precision)
    if peak:
        log.info("MFU against the dense %s peak of %s: %.4g TFLOP/s", precision, gpu, peak / 1e12)
    else:
        log.info("MFU not logged: no known dense %s peak for %s", precision, gpu or device)
    return peak


def _resolve(path: str, channel_dir: Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else channel_dir / p


def _valid_shards(layout: JobLayout, hp: Hyperparameters, tasks: list[Task]) -> dict:
    """Each task's valid shards; a task the valid channel does not hold is not validated."""
    if channels.VALID not in layout.channels:
        log.warning("no 'valid' channel: training without validation")
        return {}
    channel = layout.channel(channels.VALID)
    _, declared = _declared(channel, channels.VALID)
    missing = [t.name for t in tasks if t.name not in declared]
    if missing:
        log.warning("the valid channel holds no %s samples: not validated", ", ".join(missing))
    held = [t for t in tasks if t.name in declared]
    return _task_shards(channel, hp.valid_filelist, held, channels.VALID)


def _check_valid_channel(shards: list[Shard], limits: ShardLimits) -> None:
    """Read the valid channel once before any paid step: a malformed line, or a channel with
    no sample that fits, is a configuration error now rather than at the first validation."""
    parsed = [parse_shard(shard.path, limits) for shard in shards]
    if shards and not sum(len(p) for p in parsed):
        skipped = sum(p.skipped for p in parsed)
        raise ConfigError(
            f"the valid channel has no sample of at most max_seq_len {limits.max_seq_len} "
            f"tokens ({skipped} longer line(s) in {len(shards)} shard(s)): raise max_seq_len "
            "or prepare the validation set with shorter samples"
        )


def _create_optimizer_state(optimizer: paddle.optimizer.Optimizer, model: paddle.nn.Layer) -> None:
    """Adam's moments for every parameter now, not at its first gradient: an ERNIE 2.0 head
    whose task was not yet drawn would otherwise be missing from a checkpoint, and Paddle
    refuses to resume an optimizer whose saved state lacks a parameter it later updates.
    Zero moments are what the first gradient would have found, so training is unchanged."""
    block = paddle.static.default_main_program().global_block()
    optimizer._create_accumulators(block, model.parameters())  # no public way in Paddle 3


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


# In a checkpoint's meta: a stop cut short the validation of its step, which is owed.
VALIDATION_PENDING = "validation_pending"
# Bytes of training state per parameter: float32 weights and gradients, Adam's two moments.
STATE_BYTES = 16


def _parameters(config: ErnieConfig, weight_sharing: bool) -> tuple[int, int]:
    """(parameters of the model, of them those of its vocab-sized embedding and output),
    biases and LayerNorms of the encoder left out."""
    h = config.hidden_size
    vocab = config.vocab_size * h * (1 if weight_sharing else 2) + config.vocab_size
    rows = config.max_position_embeddings + config.type_vocab_size + config.task_type_vocab_size
    return vocab + rows * h + config.num_hidden_layers * 12 * h * h + 2 * h * h, vocab


def _device_memory() -> int | None:
    """Bytes of memory of the device training runs on: the GPU's, else the host's; None
    where it cannot be told."""
    try:
        if paddle.device.get_device().startswith("gpu"):
            return int(paddle.device.cuda.get_device_properties().total_memory)
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, RuntimeError, ValueError):
        return None


def _check_model_fits(config: ErnieConfig, weight_sharing: bool, source: str) -> None:
    """Refuse, naming the sizes, a model whose training state alone exceeds the device's
    memory (building it would end in a MemoryError, or worse, in the kernel's OOM kill)."""
    total, vocab = _parameters(config, weight_sharing)
    need, have = total * STATE_BYTES, _device_memory()
    if have is not None and need > have:
        most = (
            f"vocab_size {config.vocab_size} times hidden_size {config.hidden_size}"
            if 2 * vocab > total
            else f"hidden_size {config.hidden_size} and num_hidden_layers "
            f"{config.num_hidden_layers}"
        )
        raise ConfigError(
            f"model config {source}: {most}: {total:.3g} parameters, whose training "
            f"state ({STATE_BYTES} bytes each) is {need / 2**30:.4g} GiB, more than the "
            f"{have / 2**30:.4g} GiB of memory of {paddle.device.get_device()}"
        )


def _own_positions(
    checkpoint: Checkpoint, world_size: int, names: list[str]
) -> dict[str, DataPosition]:
    """This rank's data position in each task's stream: one is valid only for the rank and
    world size that wrote it. An ERNIE 1.0 checkpoint holds knowledge masking's alone."""
    saved = _saved_positions(checkpoint.meta)
    if sorted(saved) != sorted(names):
        raise ConfigError(
            f"checkpoint {checkpoint.path} was saved training {', '.join(saved)} and this job "
            f"trains {', '.join(names)} (tasks): give this job its own checkpoint folder"
        )
    counts = {len(p) for p in saved.values()}
    if counts != {world_size}:
        raise ConfigError(
            f"checkpoint {checkpoint.path} was saved by {counts.pop()} trainer(s) and this "
            f"job has {world_size}: each trainer reads its own share of the shards, so another "
            "count reads them in another order. Resume on as many GPUs (or trainers_per_host), "
            "or start the execution afresh"
        )
    rank = paddle.distributed.get_rank() if world_size > 1 else 0
    return {name: saved[name][rank] for name in names}


def _saved_positions(meta: dict) -> dict[str, list[DataPosition]]:
    """{task: every rank's data position} of a checkpoint's meta; DataError when it holds
    none or one is malformed (a damaged checkpoint, which a restart skips)."""
    saved = meta.get("task_positions") or {
        KNOWLEDGE_MASKING.name: meta.get("positions") or [meta.get("position")]
    }
    if not isinstance(saved, dict) or not all(isinstance(p, list) and p for p in saved.values()):
        raise DataError(f"checkpoint data positions {saved!r} are unusable")
    return {name: [DataPosition.from_dict(p) for p in ranks] for name, ranks in saved.items()}


def _positions_problem(checkpoint: Checkpoint) -> str | None:
    """Why a checkpoint that loads cannot be resumed from, or None (load_latest's check)."""
    try:
        _saved_positions(checkpoint.meta)
    except DataError as exc:
        return f"its {META_FILE} holds no usable data position ({exc})"
    return None


def _any_rank(flag: bool, world_size: int) -> bool:
    """Whether `flag` holds on any trainer, so that all of them act on it together (none
    waits on the gradients of one that left)."""
    if world_size == 1:
        return flag
    tensor = paddle.to_tensor([int(flag)])
    paddle.distributed.all_reduce(tensor, op=paddle.distributed.ReduceOp.MAX)
    return bool(tensor.item())


def _every_rank(values: list[int], world_size: int) -> list[list[int]]:
    """`values` of every rank, in rank order."""
    if world_size == 1:
        return [values]
    gathered: list[paddle.Tensor] = []
    paddle.distributed.all_gather(gathered, paddle.to_tensor(values, dtype="int64"))
    return [[int(v) for v in t.numpy()] for t in gathered]


def _restore(
    job: _Job,
    model: ErnieForPretraining,
    optimizer: paddle.optimizer.Optimizer,
    scaler: paddle.amp.GradScaler,
) -> _Progress:
    """Resume from the newest complete checkpoint, else warm-start from the model channel."""
    checkpoint = job.checkpoints.load_latest(_positions_problem)
    saved_steps = _every_rank([checkpoint.meta["step"] if checkpoint else 0], job.world_size)
    steps = {s for (s,) in saved_steps}
    if len(steps) > 1:  # hosts restore their own copies of the checkpoint folder
        raise TrainingError(
            f"the trainers found different newest checkpoints (steps {sorted(steps)}): "
            "each host resumes from its own copy of the checkpoint folder, and they differ"
        )
    if checkpoint is None:
        if channels.MODEL in job.layout.channels:
            warm_start(model, job.layout.channel(channels.MODEL), job.vocab)
        return _Progress(0, {name: DataPosition(0, 0, 0) for name in job.weights}, 0, None)
    # Paddle skips parameters of another shape with a warning: refuse such a resume.
    config = model.config
    saved = checkpoint.meta.get("config", {})
    changed = sorted(k for k, v in asdict(config).items() if saved.get(k) != v)
    if changed:
        raise ConfigError(
            f"checkpoint {checkpoint.path} is of another model: "
            + ", ".join(f"{k} {saved.get(k)} there, {getattr(config, k)} now" for k in changed)
            + " (give this job its own checkpoint folder, or the checkpoint's ernie_config)"
        )
    model.set_state_dict(checkpoint.model)
    unique = {n: p.name for n, p in model.named_parameters()}
    optimizer.set_state_dict(rename_optimizer_state(checkpoint.trainer["optimizer"], unique))
    scaler.load_state_dict(checkpoint.trainer["scaler"])
    log.info("resumed from %s", checkpoint.path)
    step = checkpoint.meta["step"]
    positions = _own_positions(checkpoint, job.world_size, list(job.weights))
    # A stop cut short the validation of this step: the job that resumes runs it first.
    owed = checkpoint.meta.get(VALIDATION_PENDING) is True and bool(job.valid_shards)
    return _Progress(step, positions, step, step if owed else None)
