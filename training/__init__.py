"""ERNIE 1.0 pretraining under SageMaker's training-container contract."""
