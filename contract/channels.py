"""The job's input channels and checkpoint folder: the names the request builder gives
them and the container reads."""

TRAIN, VALID, MODEL = "train", "valid", "model"  # pretraining; MODEL is the warm start
EVAL, BASELINE = "eval", "baseline"  # `ernie-sm evaluate`, beside MODEL (the trained model)
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"  # CheckpointConfig.LocalPath: synced to S3
