"""`ernie-sm import-weights`: a released ERNIE 1.0 checkpoint as a model this project exports.

The output is what `ernie-sm train` leaves in SM_MODEL_DIR (model.pdparams, ernie_config.json,
vocab.txt and the inference model), as a folder or as model.tar.gz, so an execution can
start from it with `warm_start_model`. SOURCE is a folder or a .tar(.gz) archive in any of
the forms weights/released.py reads.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from ernie_sm.contract import bucket_layout, presets
from ernie_sm.contract.errors import ConfigError
from ernie_sm.contract.s3_uri import S3_URI_PATTERN
from ernie_sm.text.vocab import load_vocab
from ernie_sm.weights import released

log = logging.getLogger(__name__)

ARCHIVE = "model.tar.gz"


def import_weights(
    source: Path, output: Path, vocab: str | None = None, init_missing_heads: bool = False
) -> Path:
    """Convert `source` and write it to `output` (a folder, or an archive ending .tar.gz)."""
    _check_output(output)
    with _unpacked(source) as folder, _staging(output) as staging, _named_as(folder, source):
        built = staging / "model"
        _convert(_checkpoint_root(folder), built, vocab, init_missing_heads)
        if output.name.endswith(".tar.gz"):
            pack(built, staging / ARCHIVE)
            built = staging / ARCHIVE
        _publish(built, output)
    return output


@contextlib.contextmanager
def _staging(output: Path) -> Iterator[Path]:
    """A temporary folder on the output's file system (in its nearest existing parent), so
    that the finished model moves into place with one rename, never a copy."""
    base = next(p for p in output.absolute().parents if p.is_dir())
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=base))
    except OSError as exc:
        raise ConfigError(f"--output {output}: cannot write in {base} ({exc})") from None
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(built: Path, output: Path) -> None:
    """Rename `built` to `output`: the output appears whole or not at all."""
    _check_output(output)  # nothing took the name meanwhile
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        if output.is_dir() and built.is_file():
            output.rmdir()  # an empty folder named like the archive
        os.rename(built, output)  # an empty folder is replaced atomically
    except OSError as exc:
        raise ConfigError(f"could not move the model to {output}: {exc}") from None


def _convert(folder: Path, model_dir: Path, vocab: str | None, init_missing_heads: bool) -> None:
    import paddle
    from ernie_sm.training.export import export_model
    from ernie_sm.training.model import ErnieForPretraining

    released.locate(folder)  # a folder that is no checkpoint at all is told so first
    vocab_path = _vocab_path(folder, vocab)
    tokens = load_vocab(vocab_path)
    checkpoint = released.read(folder, len(tokens))
    log.info("%s: the %s form of ERNIE 1.0", folder, checkpoint.form)
    for note in checkpoint.notes:
        log.warning("%s", note)
    # Checked before the model exists: its config alone could ask for terabytes.
    own = released.expected_shapes(checkpoint.config)
    _check_shapes(checkpoint, own, folder)
    new_heads = released.missing_heads(checkpoint.state, list(own))
    if new_heads and not init_missing_heads:
        raise ConfigError(
            f"{folder} has no pretraining heads {', '.join(new_heads)} (a base-model "
            "checkpoint): pass --init-missing-heads to start them from ERNIE's initialiser"
        )
    if new_heads:
        log.warning("initialised, not imported: %s", ", ".join(new_heads))
    paddle.seed(0)  # heads that --init-missing-heads creates are the same on every run
    model = ErnieForPretraining(checkpoint.config, tokens.pad_id)
    state = model.state_dict()  # what the checkpoint lacks keeps its fresh initialisation
    state.update({k: paddle.to_tensor(v) for k, v in checkpoint.state.items()})
    model.set_state_dict(state)
    export_model(model, checkpoint.config, vocab_path, model_dir)


def _check_shapes(checkpoint: released.Released, own: dict[str, list[int]], folder: Path) -> None:
    names = released.name_map(released.FORMS[checkpoint.form], checkpoint.config.num_hidden_layers)
    wrong = [
        f"{names[name][0]} is {list(value.shape)}, needs {own[name]}"
        for name, value in checkpoint.state.items()
        if list(value.shape) != own[name]
    ]
    if wrong:
        raise ConfigError(
            f"{folder}: tensors of another shape than its config gives: {'; '.join(wrong)}"
        )


def _vocab_path(folder: Path, vocab: str | None) -> Path:
    if vocab is not None:
        return presets.locate(vocab, Path.cwd(), presets.VOCABS, "--vocab")
    path = folder / "vocab.txt"
    if not path.is_file():
        raise ConfigError(
            f"{folder} has no vocab.txt: give --vocab (ernie-1.0 is the released ERNIE 1.0 vocab)"
        )
    return path


def _check_output(output: Path) -> None:
    if (output.exists() or output.is_symlink()) and not (
        output.is_dir() and not output.is_symlink() and not any(output.iterdir())
    ):
        raise ConfigError(f"{output} already exists: give a new folder or archive name")
    for parent in output.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise ConfigError(f"--output {output}: {parent} is not a folder")
            break


@contextlib.contextmanager
def _unpacked(source: Path) -> Iterator[Path]:
    if source.is_dir():
        yield source
        return
    if not source.exists():
        raise ConfigError(f"{source} does not exist")
    if not source.is_file():  # a FIFO or a device: reading it could block for ever
        raise ConfigError(f"{source} is not a regular file or a folder")
    if not tarfile.is_tarfile(source):
        raise ConfigError(f"{source} is neither a folder nor a .tar / .tar.gz archive")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            with tarfile.open(source) as tar:
                # The data filter refuses absolute paths, ../, links out of the folder and
                # device files; what it refuses is refused here, not skipped.
                tar.extractall(tmp, filter="data")
        except tarfile.FilterError as exc:
            raise ConfigError(f"{source}: refusing to unpack it: {exc}") from None
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise ConfigError(f"{source} is a damaged or truncated archive ({exc})") from None
        yield Path(tmp)


@contextlib.contextmanager
def _named_as(folder: Path, source: Path) -> Iterator[None]:
    """Errors about an archive's files name the archive (`ARCHIVE:member`), not the
    temporary folder it was unpacked into, which is gone when the user reads them."""
    try:
        yield
    except ConfigError as exc:
        if folder == source:
            raise
        text = str(exc).replace(f"{folder}/", f"{source}:").replace(str(folder), str(source))
        raise ConfigError(text) from None


def _checkpoint_root(folder: Path) -> Path:
    """The folder itself, or the one folder an archive wraps its files in."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir() and entries[0].name != "params":
        return entries[0]
    return folder


def pack(model_dir: Path, archive: Path) -> None:
    """model.tar.gz as SageMaker packs SM_MODEL_DIR: the folder's contents at the root."""
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(model_dir.iterdir()):
            tar.add(path, arcname=path.name)


def upload_target(destination: str) -> tuple[str, str]:
    """(bucket, key) of model.tar.gz for --upload; checked before any work is done."""
    match = S3_URI_PATTERN.fullmatch(destination)
    if match is None:
        raise ConfigError(f"--upload {destination!r} is not an s3://BUCKET/PREFIX/ URI")
    bucket, key = match.group(1), match.group(2)
    if not key.endswith(ARCHIVE):
        key = f"{key.rstrip('/')}/{ARCHIVE}"
    if not key.startswith(f"{bucket_layout.MODELS}/"):
        raise ConfigError(
            f"--upload {destination!r}: executions warm-start only from models under "
            f"s3://{bucket}/{bucket_layout.MODELS}/ (where the training role may read them): "
            f"e.g. s3://{bucket}/{bucket_layout.MODELS}/imported/{key.rsplit('/', 1)[-1]}"
        )
    return bucket, key


def upload(archive: Path, destination: str, region: str | None, profile: str | None) -> str:
    """Put model.tar.gz under s3://BUCKET/PREFIX/ (or at s3://BUCKET/KEY/model.tar.gz)."""
    from ernie_sm.dataprep.upload import aws_errors, make_s3_client

    bucket, key = upload_target(destination)
    with aws_errors(bucket, key):
        make_s3_client(region, profile).upload_file(str(archive), bucket, key)
    return f"s3://{bucket}/{key}"


def run(args: argparse.Namespace) -> int:
    from ernie_sm.dataprep.upload import UploadError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    output = Path(args.output)
    try:
        if args.upload:
            upload_target(args.upload)  # a bad URI is told before the output is written
        import_weights(Path(args.source), output, args.vocab, args.init_missing_heads)
        print(f"wrote {output}")
        if args.upload:
            with tempfile.TemporaryDirectory() as tmp:
                archive = output
                if output.is_dir():
                    archive = Path(tmp) / ARCHIVE
                    pack(output, archive)
                uri = upload(archive, args.upload, args.region, args.profile)
            print(f"uploaded to {uri}\nstart an execution with:")
            print(f'  {{"dataset": "datasets/<your corpus>", "warm_start_model": "{uri}"}}')
    except (ConfigError, UploadError) as exc:
        print(f"ernie-sm import-weights: {exc}", file=sys.stderr)
        return 2
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "import-weights",
        help="convert a released ERNIE 1.0 checkpoint into a model to warm-start from",
        description=__doc__,
    )
    p.add_argument(
        "source", help="checkpoint folder or .tar.gz: original, PaddleNLP or transformers"
    )
    p.add_argument("--output", "-o", required=True, help="folder, or archive ending .tar.gz")
    p.add_argument("--vocab", help="vocab file or preset (ernie-1.0) when SOURCE has no vocab.txt")
    p.add_argument(
        "--init-missing-heads",
        action="store_true",
        help="start MLM/NSP/pooler heads that SOURCE lacks from ERNIE's initialiser",
    )
    p.add_argument(
        "--upload",
        metavar="S3_URI",
        help="also upload model.tar.gz to s3://BUCKET/models/NAME/ (default: no upload)",
    )
    p.add_argument("--region", help="AWS region of the bucket (default: from the profile)")
    p.add_argument("--profile", help="AWS named profile (default: the credential chain)")
    p.set_defaults(run=run)
