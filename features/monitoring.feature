@monitoring
Feature: Monitoring active
  The runbook asks for Prometheus and Grafana with alert rules "to configure". Here monitoring is
  active only if Prometheus really scrapes every part of the stack, has loaded the alert rules an
  operator needs and evaluates them, no critical alert is firing, the metrics the dashboards
  and alerts are built on are fresh, and the alerts reach Alertmanager, which delivers them.

  Background:
    Given the staging target

  Scenario: Prometheus scrapes every target of the stack
    Then Prometheus reports every target up, the api, the ops exporter and itself included

  Scenario: The alert rules an operator needs are loaded
    Then Prometheus has loaded every required alert rule and evaluates them without error

  Scenario: No critical alert is firing
    Then no critical alert is firing

  Scenario: Alerts reach Alertmanager and its notifications are delivered
    Then Alertmanager has its configuration, Prometheus sends to it, no notification failed in 1 h

  Scenario Outline: The metrics behind the dashboards and alerts are exposed and fresh
    Then Prometheus scraped "<series>" from <source> within the last minute

    Examples:
      | series                                                   | source           |
      | finaiflow_http_requests_total                            | the api          |
      | finaiflow_http_request_duration_seconds_bucket           | the api          |
      | finaiflow_dependency_up                                  | the ops exporter |
      | nginx_connections_accepted_total                         | the ops exporter |
      | finaiflow_tls_certificate_not_after_timestamp_seconds    | the ops exporter |
      | finaiflow_filesystem_avail_bytes                         | the ops exporter |
