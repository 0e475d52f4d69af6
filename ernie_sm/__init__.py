"""ERNIE pretraining on Amazon SageMaker, as code: the one import namespace of the project.

Its subpackages are the repository's top-level folders (setup.py maps them), so that the
project installs beside an app's own `stacks` or `training` packages. Bottom layer first;
each imports only the ones above it here (tests/test_layers.py):

    ernie_sm.contract    contract/    errors, tasks, hyperparameters, metrics (standard library only)
    ernie_sm.text        text/        the vocab, the tokenizer, a corpus's documents
    ernie_sm.training    training/    the trainer and `ernie-sm evaluate`, in the training image
    ernie_sm.dataprep    dataprep/    raw text to shards, shards to S3
    ernie_sm.weights     weights/     released ERNIE weights in (`ernie-sm import-weights`)
    ernie_sm.serving     serving/     `ernie-sm serve`, the model server, in the training image
    ernie_sm.pipeline    pipeline/    the execution-input contract of the Prepare step
    ernie_sm.stacks      stacks/      CDK stacks and reusable constructs
    ernie_sm.operations  operations/  start, watch, ls against the deployed stack
    ernie_sm.rehearsal   rehearsal/   the state machine run locally
    ernie_sm.cli                      `ernie-sm`, above all of them
"""

import pkgutil
from pathlib import Path

# In a checkout, this folder may come first on sys.path (the current directory, pytest's
# rootdir) and hold none of the subpackages: they are in the editable install's tree of
# links (setuptools' strict mode, which pyright and IDEs follow), which extend_path adds.
__path__ = pkgutil.extend_path(__path__, __name__)
_checkouts = {str(Path(folder, "__init__.py").resolve().parent.parent) for folder in __path__}
if len(_checkouts) > 1:
    raise ImportError(
        f"ernie_sm is found in {len(_checkouts)} places ({', '.join(sorted(_checkouts))}): "
        "this environment was installed from another checkout; run make in this one"
    )
