import re

from ernie_sm.contract import metrics

TRAIN = metrics.train_line(
    metrics.TrainStats(
        step=20, epoch=1, loss=7.25, mlm_loss=6.5, nsp_acc=0.625, lr=1.5e-05, tokens_per_sec=1234.5
    )
)
VALID = metrics.valid_line(metrics.ValidStats(step=20, loss=7.0, mlm_loss=6.25, nsp_acc=0.75))
FLOPS = metrics.flops_line(
    metrics.FlopsStats(step=20, flops_per_sec=3.125e13, padding_efficiency=0.9625, mfu=0.4125)
)
FLOPS_CPU = metrics.flops_line(  # a CPU or an unlisted GPU: no peak, no mfu
    metrics.FlopsStats(step=20, flops_per_sec=2.5e9, padding_efficiency=0.75, mfu=None)
)
EXPECTED = {
    "Training-loss": (TRAIN, 7.25),
    "Training-mlm-loss": (TRAIN, 6.5),
    "Training-perplexity": (TRAIN, metrics.perplexity(6.5)),
    "Training-nsp-accuracy": (TRAIN, 0.625),
    "Training-learning-rate": (TRAIN, 1.5e-05),
    "Training-tokens-per-second": (TRAIN, 1234.5),
    "Validation-loss": (VALID, 7.0),
    "Validation-mlm-loss": (VALID, 6.25),
    "Validation-perplexity": (VALID, metrics.perplexity(6.25)),
    "Validation-nsp-accuracy": (VALID, 0.75),
    "Training-model-flops-per-second": (FLOPS, 3.125e13),
    "Training-padding-efficiency": (FLOPS, 0.9625),
    "Training-mfu": (FLOPS, 0.4125),
}
# ERNIE 2.0: every task's own lines, each with values of its own.
TASK_LINES = {
    name: (
        metrics.task_line(20, name, 1.0 + k, 0.5 + k / 10),
        metrics.valid_task_line(20, name, 2.0 + k, 0.25 + k / 10),
    )
    for k, name in enumerate(
        [
            "knowledge_masking",
            "sentence_reordering",
            "sentence_distance",
            "token_document_relation",
        ]
    )
}
for k, (name, (task, valid_task)) in enumerate(TASK_LINES.items()):
    EXPECTED[f"Training-{name}-loss"] = (task, 1.0 + k)
    EXPECTED[f"Training-{name}-accuracy"] = (task, 0.5 + k / 10)
    EXPECTED[f"Validation-{name}-loss"] = (valid_task, 2.0 + k)
    EXPECTED[f"Validation-{name}-accuracy"] = (valid_task, 0.25 + k / 10)
ALL_LINES = [
    TRAIN,
    VALID,
    FLOPS,
    FLOPS_CPU,
    *(line for pair in TASK_LINES.values() for line in pair),
]
OTHER_LINES = [
    "2026-01-01 INFO resumed from /opt/ml/checkpoints/step_000000100",
    "2026-01-01 INFO saved checkpoint /opt/ml/checkpoints/step_000000100",
    "2026-01-01 WARNING no 'valid' channel: training without validation",
]


def test_training_loss_keeps_the_regex_users_know():
    names = {d["Name"]: d["Regex"] for d in metrics.METRIC_DEFINITIONS}
    assert names["Training-loss"] == r"loss: ([0-9\.]+)"


def test_each_regex_matches_its_own_line_with_its_own_value_and_no_other_line():
    assert {d["Name"] for d in metrics.METRIC_DEFINITIONS} == set(EXPECTED)
    for definition in metrics.METRIC_DEFINITIONS:
        own_line, value = EXPECTED[definition["Name"]]
        pattern = re.compile(definition["Regex"])
        matches = pattern.findall(own_line)
        assert len(matches) == 1, definition
        assert float(matches[0]) == float(f"{value:.4e}") or abs(float(matches[0]) - value) < 1e-3
        for line in [*ALL_LINES, *OTHER_LINES]:
            if line is not own_line and (line, own_line) != (FLOPS_CPU, FLOPS):
                assert not pattern.search(line), (definition["Name"], line)


def test_a_window_without_knowledge_masking_prints_no_masked_lm_figures():
    line = metrics.train_line(
        metrics.TrainStats(20, 1, 0.75, None, None, lr=1e-4, tokens_per_sec=100.0)
    )
    assert line == "[train] step=20 epoch=1 loss: 0.750000 lr=1.0000e-04 tokens_per_sec=100.0"
    found = {d["Name"] for d in metrics.METRIC_DEFINITIONS if re.search(d["Regex"], line)}
    assert found == {"Training-loss", "Training-learning-rate", "Training-tokens-per-second"}


def test_metric_definitions_fit_sagemaker():
    # CreateTrainingJob takes at most 40 MetricDefinitions, names up to 255 characters.
    assert len(metrics.METRIC_DEFINITIONS) <= 40
    assert all(len(d["Name"]) <= 255 for d in metrics.METRIC_DEFINITIONS)


def test_the_flops_line_without_a_known_peak_has_no_mfu_and_no_zero():
    names = {d["Name"]: re.compile(d["Regex"]) for d in metrics.METRIC_DEFINITIONS}
    assert FLOPS_CPU == "[flops] step=20 flops_per_sec=2.5000e+09 padding_efficiency=0.7500"
    assert float(names["Training-model-flops-per-second"].findall(FLOPS_CPU)[0]) == 2.5e9
    assert float(names["Training-padding-efficiency"].findall(FLOPS_CPU)[0]) == 0.75
    assert not names["Training-mfu"].search(FLOPS_CPU)
    tiny = metrics.FlopsStats(step=1, flops_per_sec=1e9, padding_efficiency=0.5, mfu=4.2e-05)
    (value,) = names["Training-mfu"].findall(metrics.flops_line(tiny))
    assert float(value) == 4.2e-05  # not printed as 0.0000
    assert "loss: " not in FLOPS


def test_perplexity_does_not_overflow():
    assert metrics.perplexity(1e6) > 1e300


FINETUNE = metrics.finetune_line(metrics.PRETRAINED, 20, 0.4375)
FINETUNE_BASELINE = metrics.finetune_line(metrics.BASELINE, 20, 0.5)
DEV = metrics.dev_line(metrics.PRETRAINED, 20, 0.8125)
DEV_BASELINE = metrics.dev_line(metrics.BASELINE, 20, 0.625)
EVAL = metrics.eval_line(metrics.PRETRAINED, 0.875, 0.8)
EVAL_BASELINE = metrics.eval_line(metrics.BASELINE, 0.75, 0.7)
EVAL_EXPECTED = {
    "eval_accuracy": (EVAL, 0.875),
    "eval_f1": (EVAL, 0.8),
    "baseline_accuracy": (EVAL_BASELINE, 0.75),
    "baseline_f1": (EVAL_BASELINE, 0.7),
    "eval_dev_accuracy": (DEV, 0.8125),
}
EVAL_LINES = [FINETUNE, FINETUNE_BASELINE, DEV, DEV_BASELINE, EVAL, EVAL_BASELINE]


def test_each_eval_regex_matches_its_own_line_with_its_own_value_and_no_other_line():
    assert {d["Name"] for d in metrics.EVAL_METRIC_DEFINITIONS} == set(EVAL_EXPECTED)
    for definition in metrics.EVAL_METRIC_DEFINITIONS:
        own_line, value = EVAL_EXPECTED[definition["Name"]]
        pattern = re.compile(definition["Regex"])
        matches = pattern.findall(own_line)
        assert len(matches) == 1, definition
        assert abs(float(matches[0]) - value) < 1e-6
        for line in [*EVAL_LINES, *ALL_LINES, *OTHER_LINES]:
            if line is not own_line:
                assert not pattern.search(line), (definition["Name"], line)


def test_pretraining_regexes_match_no_evaluation_line():
    for definition in metrics.METRIC_DEFINITIONS:
        pattern = re.compile(definition["Regex"])
        assert not [line for line in EVAL_LINES if pattern.search(line)], definition["Name"]
