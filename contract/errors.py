"""Errors that end a training job with a reason a user can act on.

Each carries a one-paragraph message that names what is wrong and where; the
entrypoint writes it to SageMaker's failure file instead of a traceback.
"""


class TrainingError(Exception):
    """Base class: a failure whose message is meant for the user."""


class HyperparameterError(TrainingError):
    """A hyperparameter is unknown or its value cannot be used."""


class ConfigError(TrainingError):
    """The model config, vocab or job layout is unusable."""


class DataError(TrainingError):
    """A filelist, shard or line of training data is malformed or missing."""
