"""What the CDK tests share: the app's feature flags, synthesis under cdk-nag, cfn-lint."""

from __future__ import annotations

import json
from pathlib import Path

import cfnlint.api
import pytest
from aws_cdk import App, Environment, Validations
from cdk_nag import AwsSolutionsChecks

ROOT = Path(__file__).resolve().parents[1]
ENV = Environment(account="123456789012", region="us-east-1")
# cfn-lint warnings that CDK itself produces and that are accepted (errors never are).
ACCEPTED_CFN_LINT_WARNINGS = {
    # A CDK resource DependsOn what it also references: redundant, harmless.
    "W3005",
}


def feature_flags() -> dict:
    """The app's feature flags (cdk.json), so that tests build constructs as the app does."""
    context = json.loads((ROOT / "cdk.json").read_text()).get("context", {})
    return {k: v for k, v in context.items() if k.startswith("@aws-cdk/")}


def synth_under_nag(app: App, outdir: Path) -> None:
    """Synthesize with cdk-nag's AwsSolutions checks; any unacknowledged finding fails the test."""
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    try:
        app.synth()
    except RuntimeError as error:
        report = outdir / "validation-report.json"
        details = report.read_text() if report.is_file() else ""
        pytest.fail(f"synthesis failed: {error}\n{details}")


def cfn_lint_problems(template_file: Path) -> list[str]:
    matches = cfnlint.api.lint(template_file.read_text(), regions=[ENV.region])
    return [
        f"{m.rule.id} {m.message} ({'/'.join(map(str, m.path))})"
        for m in matches
        if m.rule.id not in ACCEPTED_CFN_LINT_WARNINGS
    ]
