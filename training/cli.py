"""`ernie-sm`: the command line of the product; one subcommand per job."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from training import hyperparams


def _train(args: argparse.Namespace) -> int:
    from training.train import main  # paddle loads only for the commands that need it

    return main()


def _demo(args: argparse.Namespace) -> int:
    from training.demo import run

    return run(Path(args.dir), Path(args.corpus), Path(args.entities))


def _hyperparameters(args: argparse.Namespace) -> int:
    for name, spec in hyperparams.SPECS.items():
        print(f"{name:28} {spec.default!r:24} {spec.help}")
    return 0


def _add_data_commands(commands: argparse._SubParsersAction) -> None:
    """`prepare` and `upload`, from the dataprep package (the [prepare] extra)."""
    try:
        from dataprep import prepare, upload
    except ImportError as exc:  # the training image installs the trainer only
        message = f"needs the data tools: pip install 'ernie-sm[prepare]' ({exc})"

        def unavailable(args: argparse.Namespace) -> int:
            print(f"ernie-sm {args.command}: {message}", file=sys.stderr)
            return 2

        for name in ("prepare", "upload"):
            commands.add_parser(name, help=message).set_defaults(run=unavailable)
        return
    prepare.add_parser(commands)
    upload.add_parser(commands)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ernie-sm", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "train",
        help="run ERNIE pretraining under SageMaker's container contract "
        "(the training image's entrypoint; SAGEMAKER_BASE_DIR relocates /opt/ml)",
    ).set_defaults(run=_train)
    demo = commands.add_parser(
        "demo", help="prepare the demo corpus and train a tiny ERNIE on it on the CPU"
    )
    demo.add_argument("--dir", default="build/demo", help="where the dataset and /opt/ml go")
    demo.add_argument("--corpus", default="demo/corpus", help="raw text to prepare")
    demo.add_argument("--entities", default="demo/entities.txt", help="entity dictionary")
    demo.set_defaults(run=_demo)
    _add_data_commands(commands)
    commands.add_parser(
        "hyperparameters", help="list the training hyperparameters with defaults and help"
    ).set_defaults(run=_hyperparameters)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
