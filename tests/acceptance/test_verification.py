"""The runbook's verification step (features/verification.feature)."""

from pytest_bdd import scenarios

scenarios("verification.feature")
