@database
Feature: Database initialized
  The runbook initialises the database with `alembic upgrade head` and creates indexes for the
  frequent queries. Here the schema must be at the api image's newest migration, the indexes must
  exist, and the api must really read and write through them.

  Background:
    Given the staging target

  Scenario: The schema is at the newest migration of the running api
    Then the database's Alembic revision is the head of the running api image

  Scenario Outline: The runbook's indexes exist
    Then the index "<index>" exists on table "<table>"

    Examples:
      | index                | table    |
      | idx_users_email      | users    |
      | idx_sessions_user_id | sessions |
      | idx_tenants_domain   | tenants  |

  Scenario: The api reads and writes the database
    When I create a tenant through the api
    Then I can read it back through the api
    When I delete it through the api
    Then it is gone from the api and from the database
