"""The state machine's Prepare step: the execution-input contract and SageMaker's request constraints."""
