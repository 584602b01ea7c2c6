@documentation
Feature: Documentation updated
  A runbook that shows commands which no longer exist is worse than none. The runbook in the
  repository must match the command line that exists, and the deployed release must be described.

  Background:
    Given the staging target

  Scenario: Every command the runbook shows exists
    Given the runbook "docs/runbook.md"
    Then every finaiflow-ops command it shows answers --help

  Scenario: The changelog describes the deployed release
    When I ask the api which release it runs
    Then the changelog "stack/CHANGELOG.md" has an entry for that release
