"""`ernie-sm`: the command line of the product; one subcommand per job."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from ernie_sm.contract import hyperparams

# Commands whose modules need more than the training image installs (data tools, AWS
# clients, the rehearsal); each module registers its own subcommands with add_parser.
TOOL_MODULES = (
    "ernie_sm.dataprep.prepare",
    "ernie_sm.dataprep.upload",
    "ernie_sm.dataprep.topics",
    "ernie_sm.weights.import_weights",
    "ernie_sm.rehearsal.rehearse",
    "ernie_sm.operations.commands",
)


def _train(args: argparse.Namespace) -> int:
    from ernie_sm.training.train import main  # paddle loads only for the commands that need it

    return main()


def _evaluate(args: argparse.Namespace) -> int:
    from ernie_sm.training.evaluate import main

    return main()


def _demo(args: argparse.Namespace) -> int:
    from ernie_sm.rehearsal.demo import run

    return run(Path(args.dir), Path(args.corpus), Path(args.entities))


def _serve(args: argparse.Namespace) -> int:
    from ernie_sm.serving.server import serve, settings_from

    return serve(settings_from(args))


def _env_number(name: str, default: float) -> float:
    import os

    return float(os.environ.get(name) or default)


SERVE_DESCRIPTION = """\
Answer GET /ping and POST /invocations under SageMaker's hosting contract: the training
image's `serve` argument (`docker run IMAGE serve`). The model is an unpacked model.tar.gz
of `ernie-sm train` (fill-mask, feature-extraction) or `ernie-sm evaluate`
(text-classification); its serving.json says which tasks it serves.

  ernie-sm serve --model-dir build/model --host 127.0.0.1 --port 8080
  curl -s localhost:8080/invocations -d '{"inputs": "北京是中国的[MASK]都"}'
"""


def _add_serve(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve an exported model under SageMaker's hosting contract (/ping, /invocations)",
        description=SERVE_DESCRIPTION,
    )
    serve.add_argument(
        "--model-dir",
        help="the unpacked model archive (default: /opt/ml/model, under $SAGEMAKER_BASE_DIR "
        "when that is set)",
    )
    serve.add_argument("--host", default="0.0.0.0", help="address to bind")
    serve.add_argument(
        "--port",
        type=int,
        help="port to bind (default: $SAGEMAKER_BIND_TO_PORT, else 8080)",
    )
    serve.add_argument("--workers", type=int, help="model processes (default: one per GPU, else 1)")
    serve.add_argument(
        "--threads",
        type=int,
        help="request threads per worker (default: 4 per CPU core, at least 8)",
    )
    serve.add_argument(
        "--max-batch",
        type=int,
        default=int(_env_number("ERNIE_SERVE_MAX_BATCH", 32)),
        help="most sequences per batch ($ERNIE_SERVE_MAX_BATCH)",
    )
    serve.add_argument(
        "--max-delay-ms",
        type=float,
        default=_env_number("ERNIE_SERVE_MAX_DELAY_MS", 5),
        help="longest wait for more requests to batch ($ERNIE_SERVE_MAX_DELAY_MS)",
    )
    serve.add_argument(
        "--max-queue",
        type=int,
        default=int(_env_number("ERNIE_SERVE_MAX_QUEUE", 256)),
        help="most requests waiting; more are answered 503 ($ERNIE_SERVE_MAX_QUEUE)",
    )
    serve.set_defaults(run=_serve)


def _hyperparameters(args: argparse.Namespace) -> int:
    specs = hyperparams.EVAL_SPECS if args.evaluate else hyperparams.SPECS
    for name, spec in specs.items():
        print(f"{name:28} {spec.default!r:24} {spec.type:16} {spec.help}")
    return 0


# The page of docs/ that documents each subcommand, named in its --help's epilog.
DOCS = {
    "train": "container-contract.md",
    "evaluate": "evaluation.md",
    "demo": "rehearsal.md",
    "prepare": "preparing-data.md",
    "upload": "preparing-data.md",
    "prepare-topics": "evaluation.md",
    "import-weights": "import-weights.md",
    "rehearse": "rehearsal.md",
    "start": "operations.md",
    "watch": "operations.md",
    "ls": "operations.md",
    "hyperparameters": "container-contract.md",
    "serve": "serving.md",
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written (they hold examples and tables); each option's default shown.

    A default is appended as "(default: X)" unless the help already speaks of it, or there
    is nothing to show: None (the help says what happens without the option), a flag's
    False, an empty list of a repeatable option.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default is None
            or default is argparse.SUPPRESS
            or action.nargs == 0
            or default == []
        ):
            return text
        return f"{text} (default: %(default)s)"


CONTAINER_CONTRACT = """\
It runs under SageMaker's training-container contract, as SageMaker runs the image
(`docker run IMAGE {command}`), and takes no options: its settings are the job's
hyperparameters, which SageMaker writes to /opt/ml/input/config/hyperparameters.json,
every value a string. `{listing}` lists their names, defaults
and help; a name it does not list, or a value it refuses, fails the job at its start,
with every problem named.

    /opt/ml/input/config/   hyperparameters.json, resourceconfig.json, inputdataconfig.json
    /opt/ml/input/data/     one folder per channel: {channels}
    /opt/ml/model/          {model}
    /opt/ml/output/failure  the reason, when the job fails

SAGEMAKER_BASE_DIR relocates /opt/ml for a local run (training/layout.py); SM_* variables
already set (SM_MODEL_DIR, SM_CHANNEL_<NAME>, ...) win over the layout's paths.
"""

TRAIN_DESCRIPTION = """\
ERNIE pretraining: the entrypoint of the training image (training/train.py).

Trains ERNIE 1.0 (knowledge masking) or the ERNIE 2.0 tasks that the `tasks`
hyperparameter names on the shards `ernie-sm prepare` wrote, validates, checkpoints, and
leaves the model and an inference model in the model folder.

""" + CONTAINER_CONTRACT.format(
    command="train",
    listing="ernie-sm hyperparameters",
    channels="train (required), valid,\n                            model (one to warm-start from)",
    model="model.pdparams, ernie_config.json, vocab.txt, inference model",
)

EVALUATE_DESCRIPTION = """\
Evaluation: the model channel's model and a baseline fine-tuned on a labelled set and
scored on its test split, accuracy and macro-F1 (training/evaluate.py). Started by the
state machine after training when the execution asks for it (ContainerArguments
["evaluate"]); `ernie-sm prepare-topics` makes a labelled set.

""" + CONTAINER_CONTRACT.format(
    command="evaluate",
    listing="ernie-sm hyperparameters --evaluate",
    channels="model (required), eval (required:\n"
    "                            train.tsv, dev.tsv, test.tsv), baseline",
    model="evaluation.json, both models' scores; the pretrained\n"
    "                            model's classifier for serving (serving.json)",
)

DEMO_DESCRIPTION = """\
The whole product on the CPU in about two minutes (rehearsal/demo.py): prepares the demo
corpus into a dataset and a labelled topic set (once, into --dir), synthesizes the stack,
and rehearses one execution of its state machine with examples/inputs/demo.json, as
`ernie-sm rehearse` does: a tiny ERNIE trained by the image's entrypoint, then evaluated.
Needs Node.js (the CDK and aws-local-stepfunctions); no AWS account, no Docker.
"""

HYPERPARAMETERS_DESCRIPTION = """\
The hyperparameters that `ernie-sm train` reads from hyperparameters.json (with
--evaluate: those of `ernie-sm evaluate`), one a line: name, default (as the string
SageMaker hands over), type (of the value once parsed) and help. Their one definition is
contract/hyperparams.py; an execution sets them with its `hyperparameters` member,
`ernie-sm start` with --hp.
"""


def _add_tool_commands(commands: argparse._SubParsersAction) -> None:
    for module_name in TOOL_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:  # e.g. in the training image, which has the trainer only
            _unavailable(commands, module_name, exc)
            continue
        module.add_parser(commands)


def _unavailable(commands: argparse._SubParsersAction, module_name: str, exc: ImportError) -> None:
    message = f"needs the development install: pip install -e '.[prepare,cdk,dev]' ({exc})"

    def unavailable(args: argparse.Namespace) -> int:
        print(f"ernie-sm {args.command}: {message}", file=sys.stderr)
        return 2

    commands.add_parser(
        module_name.rsplit(".", 1)[-1], help=message, description=message
    ).set_defaults(run=unavailable)


def build_parser() -> argparse.ArgumentParser:
    """The CLI's parser: every subcommand, each rendering its help with HelpFormatter."""
    parser = argparse.ArgumentParser(prog="ernie-sm", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "train",
        help="run ERNIE pretraining under SageMaker's container contract "
        "(the training image's entrypoint; settings: `ernie-sm hyperparameters`)",
        description=TRAIN_DESCRIPTION,
    ).set_defaults(run=_train)
    commands.add_parser(
        "evaluate",
        help="fine-tune the model channel's model and a baseline on the eval channel's "
        "labelled set and score both, under the same container contract "
        "(settings: `ernie-sm hyperparameters --evaluate`)",
        description=EVALUATE_DESCRIPTION,
    ).set_defaults(run=_evaluate)
    demo = commands.add_parser(
        "demo",
        help="prepare the demo corpus and rehearse one execution of the stack on the CPU",
        description=DEMO_DESCRIPTION,
    )
    demo.add_argument("--dir", default="build/demo", help="where the dataset and rehearsal go")
    demo.add_argument("--corpus", default="demo/corpus", help="raw text to prepare")
    demo.add_argument("--entities", default="demo/entities.txt", help="entity dictionary")
    demo.set_defaults(run=_demo)
    _add_serve(commands)
    _add_tool_commands(commands)
    listing = commands.add_parser(
        "hyperparameters",
        help="list the training hyperparameters with defaults, types and help",
        description=HYPERPARAMETERS_DESCRIPTION,
    )
    listing.add_argument(
        "--evaluate", action="store_true", help="list those of `ernie-sm evaluate` instead"
    )
    listing.set_defaults(run=_hyperparameters)
    for name, command in commands.choices.items():  # one rendering for every subcommand
        command.formatter_class = HelpFormatter
        command.epilog = _epilog(name)
    return parser


def _epilog(command: str) -> str:
    page = DOCS.get(command)
    if page is None:
        return "Documented in README.md."
    also = " (--evaluate: docs/evaluation.md)" if command == "hyperparameters" else ""
    return f"Documented in docs/{page}{also}."


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
