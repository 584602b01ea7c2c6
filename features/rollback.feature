@rollback @destructive
Feature: Rollback plan tested
  The runbook's checklist item "Plan de rollback testé". Its emergency rollback is a manual
  image change with a five-minute goal, never rehearsed. Here the drill runs on the target:
  the api is updated to another release and rolled back through the zero-downtime path while
  traffic runs, within ten seconds; and a release that cannot become healthy is refused by the
  deploy itself, traffic staying on the release that serves. These scenarios change the target:
  they run on the local reference stack, and on a remote target only with --allow-destructive.

  Background:
    Given the staging target
    And steady traffic through nginx

  Scenario: A rollback drill returns to the previous release in seconds without a failed request
    When the api is updated to another release
    And the api is rolled back
    Then the api serves the release it served before
    And traffic was back on it in less than 10 seconds
    And no request failed

  Scenario: A release that never becomes healthy is refused and traffic stays where it was
    When a release that never becomes healthy is deployed
    Then the deploy is refused with the reason
    And the api serves the release it served before
    And no request failed
