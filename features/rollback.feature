@rollback
Feature: Rollback plan tested
  The runbook's checklist item "Plan de rollback testé". Its emergency rollback is a manual
  image change with a five-minute goal, never rehearsed. Here the drill runs on the target:
  the api is updated to another release and rolled back through the zero-downtime path while
  traffic runs, within ten seconds; and a release that cannot become healthy is refused by the
  deploy itself, traffic staying on the release that serves. The drills change the target: they
  run on the local reference stack, and on a remote target only with --allow-destructive.
  A rollback goes back to the release the history names before the current one, with the
  image it ran: there must be one (a staging deployed once has nothing to go back to), and its
  image must still be on the target (a pruned image cannot be rolled back to).

  Background:
    Given the staging target

  @destructive
  Scenario: A rollback drill returns to the previous release in seconds without a failed request
    Given steady traffic through nginx
    When the api is updated to another release
    And the api is rolled back
    Then the api serves the release it served before
    And traffic was back on it in less than 10 seconds
    And no request failed

  @destructive
  Scenario: A release that never becomes healthy is refused and traffic stays where it was
    Given steady traffic through nginx
    When a release that never becomes healthy is deployed
    Then the deploy is refused with the reason
    And the api serves the release it served before
    And no request failed

  Scenario: The release a rollback would return to is still on the target
    When I ask the release history which release a rollback of the api would return to
    Then that release's image is still on the target, the very image it ran
