"""The typed view of `docker inspect` mounts: what a volume's host path is read from."""

from __future__ import annotations

from finaiflow_ops.docker_inspect import Mount, mounts, source_at

ATTRS = {"Mounts": [
    {"Type": "volume", "Name": "p_acme", "Source": "/var/lib/docker/volumes/p_acme/_data",
     "Destination": "/var/www/acme", "RW": True},
    {"Type": "bind", "Source": "", "Destination": "/empty"},
    {"Type": "bind", "Source": "/srv/logs", "Destination": "/var/log/nginx"},
]}


def test_mounts_are_read_as_source_and_destination() -> None:
    assert mounts(ATTRS)[0] == Mount("/var/lib/docker/volumes/p_acme/_data", "/var/www/acme")
    assert mounts({}) == () and mounts({"Mounts": None}) == ()


def test_the_host_path_at_a_destination_or_none() -> None:
    assert source_at(ATTRS, "/var/log/nginx") == "/srv/logs"
    assert source_at(ATTRS, "/var/www/acme") == "/var/lib/docker/volumes/p_acme/_data"
    assert source_at(ATTRS, "/empty") is None  # no host path is no answer
    assert source_at(ATTRS, "/nowhere") is None


def test_the_health_check_is_the_argv_that_runs_it_in_the_container() -> None:
    from finaiflow_ops.docker_inspect import health_argv

    argv = ("python", "-m", "app.healthcheck")
    assert health_argv({"Test": ["CMD", *argv]}) == argv
    assert health_argv({"Test": ["CMD-SHELL", "curl -f localhost"]}) == ("/bin/sh", "-c", "curl -f localhost")
    assert health_argv({"Test": ["NONE"]}) == () and health_argv({}) == ()
