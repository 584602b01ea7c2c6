@env
Feature: Environment variables configured
  The runbook's first checklist item. Its setup.sh generated a SECRET_KEY and the operator edited
  .env by hand; here the .env on the target must pass the production checks as it really is.

  Background:
    Given the staging target

  Scenario: The .env passes every production check
    When the .env on the target is checked for production
    Then no key is reported

  Scenario: The .env is readable by its owner only
    Then the .env on the target has mode 0600

  Scenario: Checking the .env shows no secret
    When I check the .env with the command line
    Then its output contains none of the secret values
