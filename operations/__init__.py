"""The operator's commands against the deployed stack: start, watch and list executions."""
