"""What a point-in-time restore can reach, from pgBackRest's view of its repository (pure logic)."""

from __future__ import annotations

from finaiflow_ops.backup.pgbackrest import PhysicalBackup, RepoInfo, WalFile, missing_segments, position


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
