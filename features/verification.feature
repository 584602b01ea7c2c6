@verification
Feature: The runbook's verification step after a deploy
  The runbook checks, after every deploy: the health endpoint through the domain, that every
  service runs, and that metrics are answered. Each item here passes only if it is true on the target.

  Background:
    Given the staging target

  Scenario: Every service of the stack runs and is healthy
    Then every service has a running container that Docker reports healthy

  Scenario: The application answers its health check through nginx over HTTPS
    When I request "/health" over HTTPS
    Then the answer is 200
    And the health report says the database is "ok"
    And the health report says the cache is "ok"

  Scenario: Plain HTTP is redirected to HTTPS
    When I request "/health" over plain HTTP
    Then I am redirected to "/health" over HTTPS

  Scenario: Metrics are answered and scraped
    Then the api answers its metrics with "finaiflow_http_requests_total" inside the network
    And Prometheus answers its own metrics on the loopback
    And Prometheus reports every api target up
