"""Where things live in the dataset bucket: one definition for the stack's grants, the
Prepare step's checks, and the tools that upload datasets and models."""

DATASETS = "datasets"  # datasets/<name>/{train,valid}/, as `ernie-sm upload` lays them out
CHECKPOINTS = "checkpoints"  # checkpoints/<execution>/..., synced from the jobs
MODELS = "models"  # models/<job>/output/model.tar.gz, and imported weights
