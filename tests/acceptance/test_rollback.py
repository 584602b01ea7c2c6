"""Checklist: rollback plan tested (features/rollback.feature).

The drill changes the target, so it runs on the local reference stack, and on a remote target
only with --allow-destructive. Whatever happens, the api is put back on the release it ran.
Which release a rollback would return to is read from the history on the target (changes nothing).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field

import pytest
from pytest_bdd import given, parsers, scenarios, then, when

from finaiflow_ops import http, rollout
from finaiflow_ops.errors import UsageError
from finaiflow_ops.releases import Release
from finaiflow_ops.rollout import DeployFailed, DeployResult
from finaiflow_ops.stack import Stack
from tests.acceptance.conftest import Staging
from tests.rollout_support import (
    BROKEN,
    SERVICE,
    Sample,
    built,
    failures,
    put_back_afterwards,
    traffic,
    version,
)

scenarios("rollback.feature")


@dataclass
class Drill:
    """What the scenario found, started and saw."""

    image: str
    replicas: int
    version: str
    exits: ExitStack = field(default_factory=ExitStack)
    requests: Callable[[], list[Sample]] = list
    results: dict[str, DeployResult] = field(default_factory=dict)
    refusal: DeployFailed | None = None


@pytest.fixture
def drill(request: pytest.FixtureRequest, stack: Stack, base_url: str) -> Iterator[Drill]:
    with put_back_afterwards(request, stack) as running:
        found = Drill(running[0].image, len(running),
                      version(base_url, http.servername_for(base_url, stack.env.get("DOMAIN"))))
        with found.exits:  # the traffic stops before the api is put back
            yield found


@when("I ask the release history which release a rollback of the api would return to",
      target_fixture="rollback_target")
def rollback_target(staging: Staging) -> Release | UsageError:
    """What `rollout.rollback` would pick now (rollout.rollback_plan: reads only), or why none."""
    try:
        return rollout.rollback_plan(staging.stack, SERVICE)
    except UsageError as exc:
        return exc


@then("that release's image is still on the target, the very image it ran")
def rollback_image_present(staging: Staging, rollback_target: Release | UsageError) -> None:
    # A staging with no release before the current one has no rollback plan to sign off.
    assert isinstance(rollback_target, Release), f"{staging.name}: {rollback_target.one_line()}"
    ran = rollback_target.image_id
    try:
        seen = rollout.image_id(staging.stack, rollback_target.image)
        where = f"now {seen[:19]}, not the {ran[:19]} it ran"
    except UsageError:
        seen, where = "", "no longer on the target"
    assert seen == ran, (f"{staging.name}: a rollback of {SERVICE} would return to release "
                         f"{rollback_target.label}, whose image is {where}")


@given("steady traffic through nginx")
def steady_traffic(staging: Staging, drill: Drill) -> None:
    drill.requests = drill.exits.enter_context(
        traffic(staging.base_url, users=4, max_seconds=300, servername=staging.servername))


@when("the api is updated to another release")
def update(staging: Staging, drill: Drill) -> None:
    others = [i for i in rollout.available_images(staging.stack, SERVICE) if i != drill.image]
    assert others, f"{staging.name}: no other release of {drill.image} on the target to drill with"
    drill.results["update"] = rollout.deploy(staging.stack, SERVICE, others[0], backup=False)


@when("the api is rolled back")
def roll_back(staging: Staging, drill: Drill) -> None:
    drill.results["rollback"] = rollout.rollback(staging.stack, SERVICE)


@when("a release that never becomes healthy is deployed")
def deploy_broken(staging: Staging, drill: Drill) -> None:
    broken = BROKEN["never-healthy"]
    with built(staging.stack, "finaiflow/api:checklist-broken", drill.image, broken) as image:
        try:
            rollout.deploy(staging.stack, SERVICE, image, backup=False, health_timeout=60)
        except DeployFailed as exc:
            drill.refusal = exc


@then("the api serves the release it served before")
def serves_before(staging: Staging, drill: Drill) -> None:
    seen = version(staging.base_url, staging.servername)
    assert seen == drill.version, f"{staging.name}: /version says {seen}, expected {drill.version}"


@then(parsers.parse("traffic was back on it in less than {limit:d} seconds"))
def rollback_in_time(staging: Staging, drill: Drill, limit: int) -> None:
    result = drill.results["rollback"]
    phases = ", ".join(f"{p.name} {p.seconds:.1f} s" for p in result.phases)
    assert result.switch_seconds < limit, (
        f"{staging.name}: traffic back on {result.release.image} after {result.switch_seconds:.1f} s "
        f"({phases})")


@then("no request failed")
def no_request_failed(staging: Staging, drill: Drill) -> None:
    drill.exits.close()  # stops the traffic and collects what it saw
    samples = drill.requests()
    failed = failures(samples)
    assert samples and not failed, (
        f"{staging.name}: {len(failed)} of {len(samples)} requests failed: {'; '.join(failed[:3])}")


@then("the deploy is refused with the reason")
def refused(staging: Staging, drill: Drill) -> None:
    assert drill.refusal is not None, f"{staging.name}: a release that is never healthy was deployed"
    message = drill.refusal.message
    assert "unhealthy" in message and f"traffic stayed on {drill.image}" in message, (
        f"{staging.name}: refused without the reason: {message}")
