"""Retention on synthetic dated backup sets: the listing's verified state, the policy, prune."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from finaiflow_ops.backup.errors import StaleBackups
from finaiflow_ops.backup.inventory import BackupEntry, list_backups
from finaiflow_ops.backup.manifest import Manifest, backup_name, manifest_path
from finaiflow_ops.backup.retention import Policy, database_name, plan, policy, prune
from finaiflow_ops.errors import UsageError

NOW = datetime(2025, 6, 30, 3, 0, tzinfo=UTC)  # a Monday, one hour after the 02:00 backup
DB = "finaiflow_db"


def entry(when: datetime, state: str = "verified", db: str = DB) -> BackupEntry:
    name = backup_name(db, when)
    return BackupEntry(name, f"/backups/{name}", db, when, 100, state,
                       "" if state == "verified" else "why", (NOW - when).total_seconds())


def nightly(days: int, *, state: str = "verified", start: int = 0) -> list[BackupEntry]:
    """One 02:00 backup per night, `start` to `start + days - 1` nights ago."""
    last = NOW.replace(hour=2)
    return [entry(last - timedelta(days=d), state) for d in range(start, start + days)]


def kept(decisions: Iterable[object]) -> list[str]:
    return [d.name for d in decisions if d.keep]  # type: ignore[attr-defined]


def deleted(decisions: Iterable[object]) -> list[str]:
    return [d.name for d in decisions if not d.keep]  # type: ignore[attr-defined]


# -- the policy -------------------------------------------------------------------------------------

def test_runbook_default_keeps_30_days_and_deletes_older() -> None:
    backups = nightly(45)
    decisions = plan(backups, Policy(), NOW)
    # Nights 0..29 are younger than 30 days (the 02:00 backup 30 nights ago is 30 days 1 h old).
    assert kept(decisions) == [b.name for b in backups[:30]]
    assert deleted(decisions) == [b.name for b in backups[30:]]
    assert "outside the policy" in next(d.why for d in decisions if not d.keep)


def test_the_newest_verified_backups_survive_any_policy() -> None:
    backups = nightly(10)
    decisions = plan(backups, Policy(keep_days=1, keep_last=3), NOW)
    assert kept(decisions) == [b.name for b in backups[:3]]
    assert "one of the newest 3 verified" in decisions[2].why


def test_prune_refuses_when_only_stale_backups_exist() -> None:
    # The runbook's failure: backups silently failing for 35 nights, good ones before that.
    backups = nightly(35, state="unverified") + nightly(10, start=35)
    with pytest.raises(StaleBackups, match=r"newest verified backup is 35\.\d days old \(limit 26 h\)"):
        plan(backups, Policy(), NOW)


def test_prune_refuses_when_no_backup_is_verified() -> None:
    with pytest.raises(StaleBackups, match="there is no verified backup"):
        plan(nightly(3, state="failed"), Policy(), NOW)
    with pytest.raises(StaleBackups, match="there is no verified backup"):
        plan([], Policy(), NOW)


def test_the_freshness_limit_is_a_parameter() -> None:
    backups = nightly(5, start=2)  # newest is 2 days 1 h old
    with pytest.raises(StaleBackups):
        plan(backups, Policy(), NOW)
    assert len(kept(plan(backups, Policy(max_age_hours=72), NOW))) == 5


def test_unverified_backups_never_protect_anything() -> None:
    # A failed backup last night does not count towards the newest 3 verified.
    backups = [entry(NOW - timedelta(hours=1), "failed"), *nightly(6, start=1)]
    decisions = plan(backups, Policy(keep_days=None, keep_last=3, max_age_hours=48), NOW)
    assert kept(decisions) == [b.name for b in backups[1:4]]
    assert deleted(decisions)[0] == backups[0].name
    assert "failed (why) and outside the policy" in decisions[0].why


def test_incomplete_files_of_killed_backups_are_always_deleted() -> None:
    partial = entry(NOW - timedelta(minutes=30), "incomplete")
    decisions = plan([partial, *nightly(3)], Policy(), NOW)
    assert deleted(decisions) == [partial.name]
    assert decisions[0].why == "incomplete: left by a backup that did not finish"


def test_generations_keep_the_newest_of_each_day_week_and_month() -> None:
    backups = nightly(200)
    decisions = plan(backups, Policy(keep_days=None, keep_last=1, daily=7, weekly=4, monthly=6), NOW)
    kept_times = sorted((b.created_at.date() for b in backups if b.name in kept(decisions)), reverse=True)
    dailies = [NOW.date() - timedelta(days=d) for d in range(7)]  # 30 June back to 24 June
    # Newest backup of each ISO week: Monday 30 June (week 27), then the Sundays before it.
    weeklies = [datetime(2025, 6, 30).date(), datetime(2025, 6, 29).date(), datetime(2025, 6, 22).date(),
                datetime(2025, 6, 15).date()]
    # Newest of each month: 30 June, then the last day of May, April, March, February, January.
    monthlies = [datetime(2025, m, d).date() for m, d in ((6, 30), (5, 31), (4, 30), (3, 31), (2, 28),
                                                          (1, 31))]
    assert kept_times == sorted(set(dailies) | set(weeklies) | set(monthlies), reverse=True)
    newest = decisions[0].why
    assert "daily 2025-06-30" in newest and "weekly 2025-W27" in newest and "monthly 2025-06" in newest


def test_generations_count_periods_that_have_a_backup() -> None:
    # Nothing for 10 nights in the middle: 3 dailies still means the last 3 days with a backup.
    backups = nightly(2) + nightly(5, start=12)
    decisions = plan(backups, Policy(keep_days=None, keep_last=1, daily=3), NOW)
    assert kept(decisions) == [b.name for b in backups[:3]]


@pytest.mark.parametrize("kwargs", [{"keep_last": 0}, {"keep_days": 0}, {"daily": -1}, {"max_age_hours": 0}])
def test_nonsense_policies_are_usage_errors(kwargs: dict[str, int]) -> None:
    with pytest.raises(UsageError):
        Policy(**kwargs)  # type: ignore[arg-type]


# -- the listing and prune, on real files -------------------------------------------------------------

def write_backup(directory: Path, when: datetime, content: bytes = b"PGDMP fake archive",
                 db: str = DB) -> Path:
    """A backup file and a manifest that matches it (what `create` leaves after its read-back)."""
    path = directory / backup_name(db, when)
    path.write_bytes(content)
    manifest = Manifest(file=path.name, sha256=hashlib.sha256(content).hexdigest(), size=len(content),
                        format="custom", database=db, server_version="15", pg_dump_version="15",
                        compression="gzip level 1", started_at=when, finished_at=when, verified_at=when,
                        snapshot="x", tables={"public.t": 1})
    manifest_path(path).write_text(manifest.to_json())
    return path


def test_listing_counts_only_files_whose_manifest_matches(tmp_path: Path) -> None:
    good = write_backup(tmp_path, NOW - timedelta(hours=5))
    no_manifest = tmp_path / backup_name(DB, NOW - timedelta(hours=4))
    no_manifest.write_bytes(b"PGDMP")
    resized = write_backup(tmp_path, NOW - timedelta(hours=3))
    resized.write_bytes(b"PGDMP fake archive, with more")
    borrowed = write_backup(tmp_path, NOW - timedelta(hours=2))
    manifest_path(borrowed).write_text(manifest_path(good).read_text())  # another file's manifest
    marked = write_backup(tmp_path, NOW - timedelta(hours=1))
    marked.with_name(marked.name + ".failed").write_text(json.dumps({"problem": "checksum mismatch"}))
    partial = tmp_path / f".{backup_name(DB, NOW)}.partial"
    partial.write_bytes(b"PGD")
    (tmp_path / "notes.txt").write_text("not a backup")
    write_backup(tmp_path, NOW - timedelta(hours=6), db="other_db")

    listing = list_backups(tmp_path, database=DB, now=NOW)
    states = {b.name: (b.state, b.problem) for b in listing.backups}
    assert states == {
        good.name: ("verified", ""),
        no_manifest.name: ("unverified", "no manifest (never verified)"),
        resized.name: ("unverified", "29 bytes, the manifest says 18"),
        borrowed.name: ("unverified", f"manifest describes {good.name}, not this file"),
        marked.name: ("failed", "checksum mismatch"),
        partial.name[1:-len(".partial")]: ("incomplete", "left by a backup that did not finish"),
    }
    assert listing.newest_verified is not None and listing.newest_verified.name == good.name
    assert listing.newest_verified_age_seconds == 5 * 3600
    assert len(list_backups(tmp_path, now=NOW).backups) == 7  # every database


def test_prune_deletes_files_with_their_manifests_and_dry_run_deletes_nothing(tmp_path: Path) -> None:
    paths = [write_backup(tmp_path, NOW.replace(hour=2) - timedelta(days=d)) for d in range(40)]
    before = sorted(p.name for p in tmp_path.iterdir())
    preview = prune(tmp_path, Policy(), database=DB, dry_run=True, now=NOW)
    assert len(preview.deleted) == 10
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".lock") == before
    result = prune(tmp_path, Policy(), database=DB, now=NOW)
    assert result.deleted == preview.deleted
    left = {p.name for p in tmp_path.iterdir()} - {".lock"}
    assert left == {n for p in paths[:30] for n in (p.name, p.name + ".json")}


def test_prune_rechecks_the_newest_checksums_before_deleting(tmp_path: Path) -> None:
    paths = [write_backup(tmp_path, NOW.replace(hour=2) - timedelta(days=d)) for d in range(5)]
    paths[0].write_bytes(b"PGDMP fake archivX")  # same size, one byte flipped since it was verified
    result = prune(tmp_path, Policy(keep_days=None, keep_last=2, max_age_hours=48), database=DB, now=NOW)
    # The damaged newest no longer counts: the next two are kept, the damaged one is deleted too.
    assert result.kept == (paths[1].name, paths[2].name)
    assert paths[0].name in result.deleted and not paths[0].exists()


def test_prune_refuses_and_deletes_nothing_when_backups_are_stale(tmp_path: Path) -> None:
    for d in range(3, 40):
        write_backup(tmp_path, NOW - timedelta(days=d))
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(StaleBackups, match="refusing to prune"):
        prune(tmp_path, Policy(), database=DB, now=NOW)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".lock") == before


# -- the defaults `backup prune` uses (a release script gets the same) ---------------------------------

def test_the_prune_policy_keeps_the_runbooks_30_days_unless_generations_are_given() -> None:
    assert policy().keep_days == 30
    assert policy(keep_days=7).keep_days == 7
    generations = policy(daily=7, weekly=4)
    assert generations.keep_days is None and (generations.daily, generations.weekly) == (7, 4)
    assert policy(keep_days=10, monthly=3).keep_days == 10  # both, when both are asked for
    assert policy(keep_last=5, max_age_hours=48) == Policy(30, 5, 0, 0, 0, 48)


@pytest.mark.parametrize(("env", "name", "expected"), [
    ({"POSTGRES_DB": "finaiflow_db", "POSTGRES_USER": "finaiflow"}, None, "finaiflow_db"),
    ({"POSTGRES_DB": "finaiflow_db"}, "other", "other"),
    ({"POSTGRES_USER": "finaiflow"}, None, "finaiflow"),  # what the postgres image creates then
    ({"POSTGRES_DB": "", "POSTGRES_USER": ""}, None, "postgres"),
    ({}, None, "postgres"),
])
def test_the_database_pruned_is_the_stacks_unless_named(env: dict[str, str], name: str | None,
                                                         expected: str) -> None:
    assert database_name(env, name) == expected
