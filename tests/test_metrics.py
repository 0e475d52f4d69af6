import re

from ernie_sm.training import metrics

TRAIN = metrics.train_line(
    metrics.TrainStats(
        step=20, epoch=1, loss=7.25, mlm_loss=6.5, nsp_acc=0.625, lr=1.5e-05, tokens_per_sec=1234.5
    )
)
VALID = metrics.valid_line(metrics.ValidStats(step=20, loss=7.0, mlm_loss=6.25, nsp_acc=0.75))
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
}
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
        for line in [TRAIN, VALID, *OTHER_LINES]:
            if line is not own_line:
                assert not pattern.search(line), (definition["Name"], line)


def test_perplexity_does_not_overflow():
    assert metrics.perplexity(1e6) > 1e300
