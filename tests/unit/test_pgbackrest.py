"""What a point-in-time restore can reach, from pgBackRest's view of its repository (pure logic)."""

from __future__ import annotations

from finaiflow_ops.backup.pgbackrest import (
    STUCK_SECONDS,
    Archiver,
    PhysicalBackup,
    RepoInfo,
    WalFile,
    abandoned_spans,
    missing_segments,
    parse_lsn,
    position,
    timeline_path,
)
from finaiflow_ops.pitr import pick_instant


def wal(*names: str, at: float = 100.0) -> tuple[WalFile, ...]:
    return tuple(WalFile(name, at + i, 1000) for i, name in enumerate(names))


def test_positions_run_across_log_files_and_ignore_the_timeline() -> None:
    assert position("0000000100000000000000FF") + 1 == position("000000010000000100000000")
    assert position("000000020000000300000004") == position("000000010000000300000004")


def test_a_complete_archive_has_no_missing_segment_even_across_a_timeline_switch() -> None:
    files = wal("0000000100000000000000FE", "0000000100000000000000FF", "000000010000000100000000",
                "000000020000000100000001")
    assert missing_segments(files, "0000000100000000000000FE") == []


def test_a_removed_segment_is_named() -> None:
    files = wal("000000010000000000000003", "000000010000000000000005", "000000010000000000000006")
    assert missing_segments(files, "000000010000000000000003") == ["000000010000000000000004"]
    # the backup's own first segment counts too
    assert missing_segments(files, "000000010000000000000002") == ["000000010000000000000002",
                                                                    "000000010000000000000004"]


def test_the_reachable_range_runs_from_the_oldest_backup_to_the_newest_archived_segment() -> None:
    first, fourth = "000000010000000000000002", "000000010000000000000004"
    backups = (PhysicalBackup("F1", "full", 10, 20, first, first, 1),
               PhysicalBackup("D1", "diff", 50, 60, fourth, fourth, 1))
    info = RepoInfo(backups, wal("000000010000000000000002", "000000010000000000000003", at=70), "ok")
    assert info.reachable() == (20, 71)
    assert info.base_for(30) == backups[0] and info.base_for(65) == backups[1]
    assert info.base_for(None) == backups[1]
    assert info.base_for(15) is None
    assert RepoInfo((), info.wal, "ok").reachable() is None


def test_lsns_and_a_history_file_give_the_newest_timelines_path() -> None:
    assert parse_lsn("0/1B000108") == 0x1B000108 and parse_lsn("16/B374D848") == (0x16 << 32) + 0xB374D848
    history = "1\t0/1C000000\tno recovery target specified\n\n2\t0/1B800000\tbefore 2026-12-05 02:00:30+00\n"
    assert timeline_path(3, history) == ((1, 0x1C000000), (2, 0x1B800000), (3, 1 << 64))


def test_a_backup_on_a_timeline_a_later_restore_abandoned_is_not_a_base() -> None:
    """Seen in CI: full F on timeline 1; --latest after a lost volume (timeline 2 from 0/1C000000);
    the daily job's differential D on timeline 2 at 0/1D000000; restore --to-time an instant of
    timeline 1 (timeline 3 branches at 0/1B800000, before D). A later --latest must start from F:
    from D, PostgreSQL cannot find D's checkpoint on timeline 3's path."""
    full = PhysicalBackup("F", "full", 10, 20, "000000010000000000000019", "000000010000000000000019", 1,
                          parse_lsn("0/19000100"))
    diff = PhysicalBackup("D", "diff", 50, 60, "00000002000000000000001D", "00000002000000000000001D", 1,
                          parse_lsn("0/1D000100"))
    files = wal("000000010000000000000019", "00000002000000000000001C", "00000003000000000000001B")
    # The instant is before timeline 2 began: recovery ended on timeline 1, timeline 3's parent.
    path = timeline_path(3, "1\t0/1B800000\tbefore 2026-12-05 02:00:30+00\n")
    info = RepoInfo((full, diff), files, "ok", path)
    assert info.on_path(full) and not info.on_path(diff)
    assert info.base_for(None) == full and info.base_for(65) == full
    assert RepoInfo((full, diff), files, "ok").base_for(None) == diff  # no history: one timeline


def test_the_spans_restores_to_a_time_went_back_over_are_abandoned() -> None:
    """Timeline 2 began at 1000 (restore --latest: nothing abandoned), timeline 3 at 2000 by a
    restore to 1500.25 (UTC, written by PostgreSQL with its time zone's offset)."""
    restored_to = "1970-01-01 01:25:00.25+01"  # 1500.25 in UTC+1
    history = f"1\t0/1C000000\tno recovery target specified\n\n2\t0/1B800000\tbefore {restored_to}\n"
    spans = abandoned_spans(3, history, {2: 1000.0, 3: 2000.0})
    assert spans == ((1500.25, 2000.0),)
    info = RepoInfo((), (), "ok", timeline_path(3, history), spans)
    assert info.abandoned_around(1700) == (1500.25, 2000.0)
    assert info.abandoned_around(1400) is None and info.abandoned_around(2100) is None
    # after a restore point, or with no history file known for the child: nothing known abandoned
    assert abandoned_spans(2, '1\t0/1C000000\tat restore point "before-release-7"\n', {2: 10.0}) == ()
    assert abandoned_spans(2, f"1\t0/1C000000\tafter {restored_to}\n", {}) == ()
    half_hour_zone = "1\t0/1C000000\tafter 1970-01-01 05:55:00+05:30\n"
    assert abandoned_spans(2, half_hour_zone, {2: 2000.0}) == ((1500.0, 2000.0),)


def archiver(*, waiting: int = 0, oldest: float = 0.0, archived_ago: float | None = 10.0,
             failed_ago: float | None = None, mode: str = "on") -> Archiver:
    return Archiver(mode, 5, 1 if failed_ago is not None else 0, archived_ago, failed_ago,
                    "000000010000000000000009" if failed_ago is not None else "", waiting, oldest)


def test_archiving_is_stuck_only_when_segments_wait_longer_than_a_healthy_archiver_lets_them() -> None:
    assert not archiver().stuck  # idle: nothing waiting, however old the last archived segment
    assert not archiver(archived_ago=86400).stuck
    assert not archiver(waiting=2, oldest=STUCK_SECONDS - 1).stuck  # a retry may still get it out
    assert archiver(waiting=2, oldest=STUCK_SECONDS + 1).stuck
    assert not archiver(waiting=2, oldest=STUCK_SECONDS + 1, mode="off").stuck


def test_a_failing_archive_command_is_named_until_a_segment_is_archived_after_it() -> None:
    assert archiver(failed_ago=5, archived_ago=50).failing
    assert archiver(failed_ago=5, archived_ago=None).failing
    assert not archiver(failed_ago=50, archived_ago=5).failing
    assert "the archive command fails (last failure 5 s ago, 000000010000000000000009)" in archiver(
        failed_ago=5, archived_ago=50, waiting=1, oldest=7).describe()


def test_a_drills_random_instant_never_falls_in_an_abandoned_span() -> None:
    gone = ((20.0, 30.0), (50.0, 60.0))  # reachable from 0 to 100: 80 s in three parts
    assert pick_instant(0, 100, gone, 0.0) == 0.0
    assert pick_instant(0, 100, gone, 0.25) == 20.0  # 20 s into the reachable times: the first part's end
    assert pick_instant(0, 100, gone, 0.375) == 40.0  # 30 s in: 10 s after the first abandoned span
    assert pick_instant(0, 100, gone, 1.0) == 100.0
    picks = [pick_instant(0, 100, gone, k / 1000) for k in range(1001)]
    assert all(p is not None and not any(a < p < b for a, b in gone) for p in picks)
    assert pick_instant(0, 100, (), 0.3) == 30.0
    assert pick_instant(25, 28, gone, 0.5) is None  # all of it abandoned
    assert pick_instant(10, 5, (), 0.5) is None and pick_instant(7, 7, (), 0.9) == 7
