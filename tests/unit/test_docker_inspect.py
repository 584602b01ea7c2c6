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
