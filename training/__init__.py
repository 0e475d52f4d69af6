"""ERNIE pretraining under SageMaker's training-container contract."""

import warnings

# Importing paddle warns that ccache is missing, a concern of compiling C++ extensions,
# which no job does: it would open every job's log.
warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)
