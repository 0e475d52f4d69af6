"""The CDK stacks and reusable constructs of the ERNIE-on-SageMaker app."""
