@load
Feature: Load tests done
  The runbook's checklist item "Tests de charge effectués". Here it means the zero-downtime gate
  (`nox -s load`: locust traffic through nginx during a rolling update, a rollback, and the
  runbook's own `--scale api=2` update measured beside them) passed for the release the target
  runs now. The gate writes its verdict on the target; with --run-load the scenario
  runs the gate first (it changes the target: local stack, or --allow-destructive).

  Scenario: The zero-downtime gate passed for the deployed release
    Given the staging target
    When I read the zero-downtime gate's verdict on the target
    Then the gate passed without a failed request during the update and the rollback
    And it covered the api release that runs now
