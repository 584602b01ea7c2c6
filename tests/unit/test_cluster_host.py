"""The pure parts of backup.cluster_host: which swarm node holds the database volumes, and the
`docker run` of a one-off container of the postgres service's spec on it; and when a swarm task's
container counts as settled (serve_again waits for the api's after a restore)."""

from __future__ import annotations

import pytest

from finaiflow_ops.backends.swarm.cluster import settled
from finaiflow_ops.backup.cluster_host import ONE_OFF_LABEL, db_node, one_off_argv
from finaiflow_ops.errors import UsageError

SPEC = {
    "Image": "finaiflow/postgres:15@sha256:" + "a" * 64,
    "Env": ["POSTGRES_USER=finaiflow_user", "POSTGRES_PASSWORD_FILE=/run/secrets/ffmulti_pg_1234"],
    "Mounts": [
        {"Type": "volume", "Source": "ffmulti_pg_data", "Target": "/var/lib/postgresql/data",
         "VolumeOptions": {"Labels": {"com.docker.stack.namespace": "ffmulti"}}},
        {"Type": "volume", "Source": "ffmulti_pg_archive", "Target": "/var/lib/pgbackrest"},
        {"Type": "bind", "Source": "/srv/x", "Target": "/x"},
    ],
}


def test_the_one_labelled_node_holds_the_database_whatever_its_tasks() -> None:
    assert db_node(["n2"], [{"NodeID": "n1", "CreatedAt": "2026-12-05T01:00:00Z"}], "finaiflow.db") == "n2"


def test_of_several_labelled_nodes_the_newest_task_s_node_is_taken() -> None:
    tasks = [{"NodeID": "n3", "CreatedAt": "2026-12-05T02:00:00Z"},
             {"NodeID": "n1", "CreatedAt": "2026-12-05T01:00:00Z"},
             {"NodeID": "n4", "CreatedAt": "2026-12-05T03:00:00Z"}]  # n4 is not labelled
    assert db_node(["n1", "n3"], tasks, "finaiflow.db") == "n3"


@pytest.mark.parametrize("labelled", [[], ["n1", "n3"]])
def test_no_labelled_node_or_no_task_to_choose_between_several_is_refused(labelled: list[str]) -> None:
    with pytest.raises(UsageError, match=r"labelled finaiflow\.db=true") as caught:
        db_node(labelled, [{"NodeID": "n9", "CreatedAt": "x"}], "finaiflow.db")
    assert "--label-rm finaiflow.db" in (caught.value.hint or "")


def test_a_one_off_runs_the_service_spec_on_the_node_without_network_labelled() -> None:
    argv = one_off_argv(["docker", "-H", "tcp://10.0.0.3:2375"], SPEC, image="finaiflow/postgres:15",
                        label="ffmulti", entrypoint="pgbackrest", args=["--stanza=main", "info"])
    assert argv[:4] == ["docker", "-H", "tcp://10.0.0.3:2375", "run"]
    assert argv[-3:] == ["finaiflow/postgres:15", "--stanza=main", "info"]
    options = argv[4:-3]
    assert "--rm" in options and options[options.index("--network") + 1] == "none"
    assert options[options.index("--entrypoint") + 1] == "pgbackrest"
    assert options[options.index("--label") + 1] == f"{ONE_OFF_LABEL}=ffmulti"
    mounts = [options[i + 1] for i, o in enumerate(options) if o == "--mount"]
    assert mounts == [  # volumes only; one made anew gets the stack's labels
        "type=volume,source=ffmulti_pg_data,target=/var/lib/postgresql/data,"
        "volume-label=com.docker.stack.namespace=ffmulti",
        "type=volume,source=ffmulti_pg_archive,target=/var/lib/pgbackrest",
    ]
    assert [options[i + 1] for i, o in enumerate(options) if o == "--env"] == SPEC["Env"]
    assert "--user" not in options


def test_a_one_off_keeps_the_spec_s_user() -> None:
    argv = one_off_argv(["docker"], {**SPEC, "User": "postgres"}, image="i", label="p", entrypoint="sh",
                        args=["-c", "true"])
    assert argv[argv.index("--user") + 1] == "postgres"


@pytest.mark.parametrize(("state", "expected"), [
    ({"Status": "running", "Health": {"Status": "healthy", "FailingStreak": 0}}, True),
    ({"Status": "running"}, True),  # no health check
    ({"Status": "running", "Health": {"Status": "healthy", "FailingStreak": 2}}, False),  # failing since
    ({"Status": "running", "Health": {"Status": "unhealthy", "FailingStreak": 3}}, False),  # to be replaced
    ({"Status": "running", "Health": {"Status": "starting", "FailingStreak": 0}}, False),
    ({"Status": "exited", "Health": {"Status": "healthy", "FailingStreak": 0}}, False),
])
def test_a_swarm_task_is_settled_once_its_container_passed_its_last_health_check(
        state: dict[str, object], expected: bool) -> None:
    assert settled(state) is expected
