"""CloudWatch dashboard and alarms for the pretraining pipeline.

Metrics that the metric definitions extract from the training log land in
`/aws/sagemaker/TrainingJobs` per TrainingJobName, instance metrics (GPU use) per Host
`<job>/algo-N`. A new job is a new dimension value, so the dashboard finds this stack's
jobs (`<name_prefix>-...`) with SEARCH expressions; alarms, which cannot use SEARCH, watch
the state machine instead. Evaluation jobs (`<name_prefix>-eval-...`) report their test
scores once, at their end (EVAL_METRIC_DEFINITIONS): one point per job. ERNIE 2.0 jobs
report each task's loss and accuracy (`Training-<task>-loss`, ...): the stages of a staged
execution are jobs of their own, so the task graphs show every task across the stages.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct
from ernie_sm.contract.metrics import EVAL_METRIC_DEFINITIONS, METRIC_DEFINITIONS
from ernie_sm.contract.tasks import TASKS

NAMESPACE = "/aws/sagemaker/TrainingJobs"
PERIOD = Duration.minutes(1)


@dataclass(frozen=True)
class MonitoringProps:
    state_machine: sfn.IStateMachine
    topic: sns.ITopic
    name_prefix: str = "ernie"


def _search(metric: str, dimension: str, name_prefix: str) -> cloudwatch.MathExpression:
    # `Dimension=prefix` unquoted is a partial match on tokens, which CloudWatch cuts at
    # non-alphanumeric characters: it finds `<prefix>-...` job names and `<job>/algo-N` hosts.
    # Quoted, `"prefix-"` would have to be the whole value ("CloudWatch search expression
    # syntax", Amazon CloudWatch User Guide). SEARCH has no starts-with; a job of another
    # stack is shown too if its name contains the prefix between delimiters.
    expression = (
        f"SEARCH('{{{NAMESPACE},{dimension}}} MetricName=\"{metric}\" {dimension}={name_prefix}', "
        f"'Average', {int(PERIOD.to_seconds())})"
    )
    return cloudwatch.MathExpression(expression=expression, label="", period=PERIOD)


def _graph(
    title: str,
    metrics: list[str],
    name_prefix: str,
    dimension: str = "TrainingJobName",
    width: int = 12,
) -> cloudwatch.GraphWidget:
    return cloudwatch.GraphWidget(
        title=title,
        left=[_search(m, dimension, name_prefix) for m in metrics],
        width=width,
        height=6,
        legend_position=cloudwatch.LegendPosition.BOTTOM,
    )


class Monitoring(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: MonitoringProps) -> None:
        super().__init__(scope, construct_id)
        names = [d["Name"] for d in METRIC_DEFINITIONS]
        per_task = [n for n in names if n.split("-")[1] in TASKS]  # Training-<task>-loss
        validation = [n for n in names if n.startswith("Validation-") and n not in per_task]

        def tasks(kind: str, figure: str) -> list[str]:
            return [n for n in per_task if n.startswith(kind) and n.endswith(figure)]

        scores = [d["Name"] for d in EVAL_METRIC_DEFINITIONS]
        accuracy = [n for n in scores if n in ("eval_accuracy", "baseline_accuracy")]
        f1 = [n for n in scores if n in ("eval_f1", "baseline_f1")]
        machine = props.state_machine
        prefix = props.name_prefix
        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=f"{props.name_prefix}-pretraining",
            widgets=[
                [
                    _graph(f"Training loss, {prefix}-* jobs", ["Training-loss"], prefix),
                    _graph(f"Validation, {prefix}-* jobs", validation, prefix),
                ],
                [  # throughput, and how much of the GPU it is (training/flops.py)
                    _graph("Tokens per second", ["Training-tokens-per-second"], prefix, width=8),
                    _graph(
                        "Model FLOPs per second",
                        ["Training-model-flops-per-second"],
                        prefix,
                        width=8,
                    ),
                    _graph(
                        "MFU and padding efficiency (real / padded tokens)",
                        ["Training-mfu", "Training-padding-efficiency"],
                        prefix,
                        width=8,
                    ),
                ],
                [
                    _graph("ERNIE 2.0 tasks: training loss", tasks("Training", "loss"), prefix),
                    _graph(
                        "ERNIE 2.0 tasks: training accuracy", tasks("Training", "accuracy"), prefix
                    ),
                ],
                [
                    _graph("ERNIE 2.0 tasks: validation loss", tasks("Validation", "loss"), prefix),
                    _graph(
                        "ERNIE 2.0 tasks: validation accuracy",
                        tasks("Validation", "accuracy"),
                        prefix,
                    ),
                ],
                [
                    _graph("Learning rate", ["Training-learning-rate"], prefix, width=8),
                    _graph("GPU utilisation per host", ["GPUUtilization"], prefix, "Host", width=8),
                    _graph(
                        "GPU memory utilisation per host",
                        ["GPUMemoryUtilization"],
                        prefix,
                        "Host",
                        width=8,
                    ),
                ],
                [
                    _graph("Evaluation: test accuracy, pretrained vs baseline", accuracy, prefix),
                    _graph("Evaluation: test macro-F1, pretrained vs baseline", f1, prefix),
                ],
                [
                    cloudwatch.GraphWidget(
                        title="Executions",
                        left=[
                            machine.metric_started(period=Duration.hours(1)),
                            machine.metric_succeeded(period=Duration.hours(1)),
                            machine.metric_failed(period=Duration.hours(1)),
                            machine.metric_timed_out(period=Duration.hours(1)),
                        ],
                        width=24,
                        height=6,
                    )
                ],
            ],
        )
        self.alarms = [
            self._alarm("Failed", machine.metric_failed(period=Duration.minutes(5)), props.topic),
            self._alarm(
                "TimedOut", machine.metric_timed_out(period=Duration.minutes(5)), props.topic
            ),
        ]

    def _alarm(self, name: str, metric: cloudwatch.Metric, topic: sns.ITopic) -> cloudwatch.Alarm:
        alarm = cloudwatch.Alarm(
            self,
            f"Executions{name}",
            metric=metric.with_(statistic="Sum"),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=f"A pretraining execution {name.lower()} in the last 5 minutes",
        )
        alarm.add_alarm_action(actions.SnsAction(topic))
        return alarm
