"""`ernie-sm serve`: the model server under SageMaker's hosting contract (docs/serving.md)."""
