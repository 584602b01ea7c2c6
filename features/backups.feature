@backups
Feature: Backups configured
  The runbook takes a nightly pg_dump and deletes files older than 30 days; nobody learns that a
  backup was empty, truncated or never taken until the day it is needed. Here a backup counts only
  once it has been read back in full and checksummed, the daily job must be installed where it will
  run, and the newest backup is proven by restoring it. The WAL is archived continuously with
  pgBackRest, and a random instant of the last day is proven by restoring it into a scratch
  container and comparing it with what the database held then.

  A new local staging gets its first backup and the daily job when it is brought up
  (`stack up --staging`); the checklist checks the target as it is.

  Background:
    Given the staging target
    And the backups of its database

  Scenario: The daily backup is scheduled where it will run
    Then the daily backup and prune are installed in the target's scheduler, which is running

  Scenario: A verified backup is younger than 26 hours
    Then the newest verified backup is younger than 26 hours

  Scenario: The newest backup restores (restore drill)
    When I run a restore drill of the newest verified backup
    Then the drill restored every table with the row count of the backup's manifest

  Scenario: The WAL archive restores an instant of the last 24 hours (restore drill --pitr)
    When I run a point-in-time drill of a random instant of the last 24 hours
    Then the restored cluster held the same heartbeat rows as the database at that instant
