"""What a point-in-time restore can reach, from pgBackRest's view of its repository (pure logic)."""

from __future__ import annotations

from finaiflow_ops.backup.pgbackrest import (
    STUCK_SECONDS,
    Archiver,
    PhysicalBackup,
    RepoInfo,
    WalFile,
    missing_segments,
    parse_lsn,
    position,
    timeline_path,
)


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
