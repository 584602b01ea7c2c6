"""The ops-facts exporter's reading of facts (stack/ops-exporter/ops_exporter.py): pure logic on
real files in a temporary directory; the live exporter is tested in tests/integration."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from finaiflow_ops.backup import list_backups
from finaiflow_ops.backup.manifest import Manifest, backup_name, failed_marker, manifest_path
from finaiflow_ops.releases import Release
from tests.stack_scripts import load

ox = load("ops-exporter/ops_exporter.py")


def samples(families: list[Any], name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """name's samples across families: sorted label pairs -> value."""
    return {tuple(sorted(labels.items())): value
            for m in families if m.name == name for labels, value in m.samples}


def one(families: list[Any], name: str, **labels: str) -> float | None:
    return samples(families, name).get(tuple(sorted(labels.items())))


# -- exposition ---------------------------------------------------------------------------------------


def test_render_escapes_labels_skips_empty_families_and_writes_integers_plainly() -> None:
    filled = ox.Metric("x_total", "counter", "help").add(3, path='a"b\\c\nd').add(0.5)
    text = ox.render([filled, ox.Metric("empty", "gauge", "never shown")])
    assert text == ('# HELP x_total help\n# TYPE x_total counter\n'
                    'x_total{path="a\\"b\\\\c\\nd"} 3\nx_total 0.5\n')


@pytest.mark.parametrize(("value", "expected"), [
    ("2024-05-01T12:00:00Z", 1714564800.0),
    ("2024-05-01T14:00:00+02:00", 1714564800.0),
    ("2024-05-01T12:00:00", 1714564800.0),  # naive: UTC, as the tools write
    (1714564800, 1714564800.0),
    ("yesterday", None), ("", None), (None, None), (True, None),
])
def test_times_are_read_from_iso_strings_and_numbers(value: object, expected: float | None) -> None:
    assert ox.parse_time(value) == expected


# -- backups (the files finaiflow_ops.backup writes) -------------------------------------------------------


def write_backup(directory: Path, when: datetime, *, body: bytes = b"PGDMP dump", **change: Any) -> Path:
    """A dump and its manifest, as `backup create` writes them; `change` edits the manifest."""
    directory.mkdir(exist_ok=True)
    dump = directory / backup_name("finaiflow_db", when)
    dump.write_bytes(body)
    manifest = Manifest(file=dump.name, sha256=hashlib.sha256(body).hexdigest(), size=len(body),
                        format="custom", database="finaiflow_db", server_version="15", pg_dump_version="15",
                        compression="gzip 1", started_at=when, finished_at=when + timedelta(seconds=30),
                        verified_at=when + timedelta(seconds=31), snapshot="00000003-1")
    data = json.loads(manifest.to_json())
    data.update(change)
    path = manifest_path(dump)
    path.write_text(json.dumps({k: v for k, v in data.items() if v is not None}))
    return path


MAY1 = datetime(2024, 5, 1, 2, 0, tzinfo=UTC)


def test_a_backup_as_backup_create_writes_it_is_verified(tmp_path: Path) -> None:
    b = ox.read_backup(write_backup(tmp_path, MAY1))
    assert (b.verified, b.problem, b.size, b.taken, b.finished - b.taken) == (
        True, "", 10.0, MAY1.timestamp(), 30.0)


@pytest.mark.parametrize(("change", "problem"), [
    ({"size": 999}, "10 bytes, the manifest says 999"),
    ({"sha256": None}, "no checksum"),
    ({"started_at": None}, "no start or finish time"),
    ({"file": "other.dump"}, "describes 'other.dump', not finaiflow_db-20240501T020000Z.dump"),
])
def test_a_backup_that_contradicts_its_manifest_is_not_verified(tmp_path: Path, change: dict[str, Any],
                                                                 problem: str) -> None:
    b = ox.read_backup(write_backup(tmp_path, MAY1, **change))
    assert (b.verified, b.problem) == (False, problem)


def test_a_backup_that_failed_a_later_verification_is_not_verified(tmp_path: Path) -> None:
    manifest = write_backup(tmp_path, MAY1)
    failed_marker(manifest.with_suffix("")).write_text('{"problem": "checksum differs"}')
    assert ox.read_backup(manifest).problem == "failed a later verification"


def test_a_manifest_without_its_dump_or_cut_short_is_not_verified(tmp_path: Path) -> None:
    manifest = write_backup(tmp_path, MAY1)
    manifest.with_suffix("").unlink()
    assert ox.read_backup(manifest).problem == "dump file missing"
    manifest.write_text('{"sha256": "ab", "finis')
    assert ox.read_backup(manifest).problem == "invalid: JSONDecodeError"


def test_newest_verified_backup_is_reported_and_a_newer_failed_one_is_counted(tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    write_backup(backups, MAY1)
    write_backup(backups, MAY1 + timedelta(days=1), body=b"x" * 100)
    write_backup(backups, MAY1 + timedelta(days=2), size=1)
    families = ox.backup_metrics(backups)
    newest = (MAY1 + timedelta(days=1)).timestamp()
    assert one(families, "finaiflow_backup_last_verified_timestamp_seconds") == newest
    assert one(families, "finaiflow_backup_last_verified_size_bytes") == 100
    assert one(families, "finaiflow_backup_last_verified_duration_seconds") == 30
    assert one(families, "finaiflow_backup_last_timestamp_seconds") == (MAY1 + timedelta(days=2)).timestamp()
    assert one(families, "finaiflow_backups", state="verified") == 2
    assert one(families, "finaiflow_backups", state="unverified") == 1
    assert one(families, "finaiflow_facts_readable", fact="backups") == 1


def test_the_exporter_agrees_with_backup_list_on_what_is_verified(tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    good = write_backup(backups, MAY1)
    write_backup(backups, MAY1 + timedelta(hours=1), size=3)
    failed_marker(write_backup(backups, MAY1 + timedelta(hours=2)).with_suffix("")).write_text("{}")
    listed = list_backups(backups)
    assert [b.name for b in listed.backups if b.verified] == [good.with_suffix("").name]
    assert one(ox.backup_metrics(backups), "finaiflow_backups", state="verified") == 1


def test_no_backup_directory_means_no_backup_time_at_all(tmp_path: Path) -> None:
    families = ox.backup_metrics(tmp_path / "backups")
    assert one(families, "finaiflow_facts_readable", fact="backups") == 1
    assert not samples(families, "finaiflow_backup_last_verified_timestamp_seconds")
    assert one(families, "finaiflow_backups", state="verified") == 0


# -- releases (the file finaiflow_ops.releases writes) ------------------------------------------------------


def release(id: int, image: str, kind: str, at: str, **more: Any) -> dict[str, Any]:
    return asdict(Release(id=id, service="api", image=image, image_id=f"sha256:{id}", config_hash="c",
                          kind=kind, deployed_at=at, **more))


def test_current_release_and_last_change_come_from_the_release_history(tmp_path: Path) -> None:
    history = tmp_path / "releases.json"
    history.write_text(json.dumps({"services": {"api": {"current": 2, "releases": [
        release(1, "finaiflow/api:1.0.0", "observed", "2024-05-01T10:00:00+00:00"),
        release(2, "finaiflow/api:1.1.0", "deploy", "2024-05-01T11:00:00+00:00"),
    ]}}}))
    families = ox.release_metrics(history)
    assert samples(families, "finaiflow_release_info") == {
        (("id", "2"), ("image", "finaiflow/api:1.1.0"), ("release", "1.1.0"), ("service", "api")): 1}
    assert samples(families, "finaiflow_release_last_change_timestamp_seconds") == {
        (("kind", "deploy"), ("release", "1.1.0"), ("service", "api")): ox.parse_time("2024-05-01T11:00:00Z")}
    assert one(families, "finaiflow_release_records", service="api", kind="observed") == 1


def test_a_rollback_is_the_last_change_and_names_the_current_release(tmp_path: Path) -> None:
    history = tmp_path / "releases.json"
    history.write_text(json.dumps({"services": {"api": {"current": 3, "releases": [
        release(1, "finaiflow/api:1.0.0", "deploy", "2024-05-01T10:00:00+00:00"),
        release(2, "finaiflow/api:1.1.0", "deploy", "2024-05-01T11:00:00+00:00"),
        release(3, "finaiflow/api:1.0.0", "rollback", "2024-05-01T11:05:00+00:00", previous=2),
    ]}}}))
    families = ox.release_metrics(history)
    assert [dict(k)["release"] for k in samples(families, "finaiflow_release_info")] == ["1.0.0"]
    changes = samples(families, "finaiflow_release_last_change_timestamp_seconds")
    assert [dict(k)["kind"] for k in changes] == ["rollback"]


@pytest.mark.parametrize("text", ['{"services": {"api": {"curr', '["not", "ours"]'])
def test_an_unreadable_release_history_is_said_so_not_taken_for_none(tmp_path: Path, text: str) -> None:
    history = tmp_path / "releases.json"
    history.write_text(text)
    families = ox.release_metrics(history)
    assert one(families, "finaiflow_facts_readable", fact="releases") == 0
    assert not samples(families, "finaiflow_release_info")


def test_no_release_history_yet_is_readable_and_empty(tmp_path: Path) -> None:
    families = ox.release_metrics(tmp_path / "releases.json")
    assert one(families, "finaiflow_facts_readable", fact="releases") == 1
    assert not samples(families, "finaiflow_release_info")


# -- nginx, disks, configuration ---------------------------------------------------------------------------


def test_stub_status_page_is_parsed() -> None:
    page = ("Active connections: 3 \nserver accepts handled requests\n 10 9 42 \n"
            "Reading: 0 Writing: 1 Waiting: 2 \n")
    assert ox.parse_stub_status(page) == {"active": 3, "accepted": 10, "handled": 9, "requests": 42,
                                          "reading": 0, "writing": 1, "waiting": 2}
    with pytest.raises(ValueError, match="not a stub_status page"):
        ox.parse_stub_status("<html>404</html>")


def test_disk_space_is_reported_per_named_path_and_missing_paths_are_left_out(tmp_path: Path) -> None:
    families = ox.disk_metrics({"project": str(tmp_path), "gone": str(tmp_path / "nope")})
    size, avail = one(families, "finaiflow_filesystem_size_bytes", mount="project"), one(
        families, "finaiflow_filesystem_avail_bytes", mount="project")
    assert size and avail is not None and 0 <= avail <= size
    assert one(families, "finaiflow_filesystem_size_bytes", mount="gone") is None


def test_archive_facts_come_from_the_repository_status_files(tmp_path: Path) -> None:
    (tmp_path / "archived").write_text("1764900000 000000010000000000000007\n")
    (tmp_path / "failed").write_text("1764890000 3 000000010000000000000005\n")
    (tmp_path / "backups").write_text("1764800000 1764850000 diff 20261204-010000F_20261204-020000D\n")
    families = ox.archive_metrics(tmp_path)
    assert one(families, "finaiflow_facts_readable", fact="archive") == 1
    assert one(families, "finaiflow_wal_last_archived_timestamp_seconds") == 1764900000
    assert one(families, "finaiflow_wal_archive_last_failure_timestamp_seconds") == 1764890000
    assert one(families, "finaiflow_wal_archive_failures_total") == 3
    assert one(families, "finaiflow_pgbackrest_last_full_backup_timestamp_seconds") == 1764800000
    assert one(families, "finaiflow_pgbackrest_last_backup_timestamp_seconds", type="diff") == 1764850000


def test_no_archive_status_yet_is_readable_with_no_times(tmp_path: Path) -> None:
    families = ox.archive_metrics(tmp_path / "status")
    assert one(families, "finaiflow_facts_readable", fact="archive") == 1
    assert one(families, "finaiflow_wal_archive_failures_total") == 0
    assert one(families, "finaiflow_wal_last_archived_timestamp_seconds") is None


def test_a_garbled_archive_status_is_unreadable_not_zero(tmp_path: Path) -> None:
    (tmp_path / "archived").write_text("yesterday\n")
    families = ox.archive_metrics(tmp_path)
    assert one(families, "finaiflow_facts_readable", fact="archive") == 0
    assert one(families, "finaiflow_wal_last_archived_timestamp_seconds") is None


def test_configuration_comes_from_the_environment() -> None:
    cfg = ox.Config.from_env({"DISK_PATHS": "project=/facts/project,database=/facts/volumes/pg_data",
                              "DOMAIN": "app.example.org", "PROJECT_DIR": "/p"})
    assert cfg.disks == {"project": "/facts/project", "database": "/facts/volumes/pg_data"}
    assert (cfg.domain, cfg.project_dir, cfg.api_host, cfg.api_port) == ("app.example.org", Path("/p"),
                                                                          "api", 8000)


def test_families_of_the_same_name_are_merged_into_one() -> None:
    merged = ox.merge([ox.Metric("r", "gauge", "h").add(1, fact="backups"),
                       ox.Metric("r", "gauge", "h").add(0, fact="releases")])
    assert len(merged) == 1 and len(merged[0].samples) == 2


@pytest.mark.parametrize(("ptr", "container"), [
    ("finaiflow-api-1.finaiflow_default", "finaiflow-api-1"),
    ("ffswarm_api.2.k3x9q2m1v0.ffswarm_default", "ffswarm_api.2.k3x9q2m1v0"),
    ("ffswarm_api.1.p0o9i8u7y6.ffswarm_default.", "ffswarm_api.1.p0o9i8u7y6"),
    ("finaiflow-api-2", "finaiflow-api-2"),
])
def test_api_containers_are_named_per_container_and_per_swarm_task(ptr: str, container: str) -> None:
    assert ox.container_of(ptr) == container
