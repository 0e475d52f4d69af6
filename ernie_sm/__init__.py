"""ERNIE pretraining on Amazon SageMaker, as code: the one import namespace of the project.

Its subpackages are the repository's top-level folders (setup.py maps them), so that the
project installs beside an app's own `stacks` or `training` packages:

    ernie_sm.training    training/    the trainer and `ernie-sm evaluate`, in the training image
    ernie_sm.pipeline    pipeline/    the execution-input contract of the Prepare step
    ernie_sm.stacks      stacks/      CDK stacks and reusable constructs
    ernie_sm.dataprep    dataprep/    raw text to shards, shards to S3 (its tokenizer in the image)
    ernie_sm.rehearsal   rehearsal/   the state machine run locally
    ernie_sm.operations  operations/  start, watch, ls against the deployed stack
    ernie_sm.cli                      `ernie-sm`, above all of them
"""
