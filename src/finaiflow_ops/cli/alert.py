"""`finaiflow-ops alert test|list|silence|unsilence`: the stack's Alertmanager, for a person."""

from __future__ import annotations

import click
from rich.table import Table

from finaiflow_ops import alerting
from finaiflow_ops.cli.options import Options, emit, pass_options
from finaiflow_ops.errors import CheckFailed
from finaiflow_ops.output import out


@click.group("alert")
def alert_group() -> None:
    """Alertmanager: prove delivery, see what fires, silence a maintenance window."""


@alert_group.command("test")
@click.option("--severity", type=click.Choice(list(alerting.RECEIVER_OF)), default="critical",
              show_default=True, help="The route to test: critical -> paging, warning -> ticket.")
@click.option("--timeout", type=click.FloatRange(1), default=alerting.DELIVERY_TIMEOUT, show_default=True,
              help="Seconds to wait for Alertmanager's notification (it first waits ALERT_GROUP_WAIT).")
@pass_options
def alert_test(opts: Options, severity: alerting.Severity, timeout: float) -> None:
    """Send a synthetic alert through the real route and report whether its receiver got it.

    Exits 1 naming the receiver and the error (the webhook's answer, or why it could not be reached).
    """
    delivery = alerting.test_delivery(opts.stack, severity, timeout=timeout)
    emit(opts, delivery, _print_delivery)
    if not delivery.delivered:
        raise CheckFailed(f"alert test: receiver {delivery.receiver} did not get the {severity} alert: "
                          f"{delivery.error}", problems=(f"{delivery.receiver}: {delivery.error}",),
                          hint="see `finaiflow-ops logs alertmanager --since 15m`; `finaiflow-ops env check`")


def _print_delivery(d: alerting.Delivery) -> None:
    what = "+".join(d.integrations) or "no integration"
    if d.delivered:
        out.print(f"delivered: the {d.severity} test alert {d.test_id} reached receiver {d.receiver} "
                  f"({what}) in {d.seconds:.1f} s", markup=False)
    else:
        out.print(f"NOT delivered: receiver {d.receiver} ({what}): {d.error}", markup=False)
    sent = ", ".join(f"{i} +{n:.0f}" for i, n in d.notifications.items()) or "none"
    failed = ", ".join(f"{i} +{n:.0f}" for i, n in d.failed_requests.items()) or "none"
    out.print(f"  Alertmanager's counters during the test: notifications {sent}; failed requests {failed}")


@alert_group.command("list")
@pass_options
def alert_list(opts: Options) -> None:
    """What Alertmanager holds: firing and suppressed alerts, since when, where each was sent; silences."""
    emit(opts, alerting.held(opts.stack), _print_list)


def _print_list(view: alerting.Held) -> None:
    table = Table(title="alerts in Alertmanager", title_justify="left")
    for column in ("alert", "severity", "state", "since", "sent to", "summary"):
        table.add_column(column)
    for a in view.alerts:
        state = a.state + (" (silenced)" if a.silenced_by else "")
        state += " (inhibited)" if a.inhibited_by else ""
        table.add_row(a.name, a.severity, state, a.since, ", ".join(a.receivers), a.summary)
    out.print(table)
    for s in view.silences:
        out.print(f"silence {s.id} ({s.state}) until {s.ends_at} by {s.created_by}: {s.comment} "
                  f"[{', '.join(s.matchers)}]", markup=False)


@alert_group.command("silence")
@click.option("--for", "duration", required=True, help="How long: 30m, 2h, 1d.")
@click.option("--comment", required=True, help="Why (shown with the silence).")
@click.option("--match", "matchers", multiple=True,
              help="NAME=VALUE (also !=, =~, !~), repeatable [every alert but the Watchdog].")
@pass_options
def alert_silence(opts: Options, duration: str, comment: str, matchers: tuple[str, ...]) -> None:
    """Silence alerts for a maintenance window (the Watchdog heartbeat goes on)."""
    made = alerting.silence(opts.stack, minutes=alerting.parse_duration(duration), comment=comment,
                            matchers=matchers)
    emit(opts, made, _print_silence)


def _print_silence(s: alerting.Silence) -> None:
    out.print(f"silence {s.id} until {s.ends_at}: {', '.join(s.matchers)}", markup=False)


@alert_group.command("unsilence")
@click.argument("silence_id", required=False)
@pass_options
def alert_unsilence(opts: Options, silence_id: str | None) -> None:
    """End a silence (SILENCE_ID), or every active one finaiflow-ops made."""
    emit(opts, alerting.unsilence(opts.stack, silence_id), _print_ended)


def _print_ended(ended: tuple[alerting.Silence, ...]) -> None:
    out.print("\n".join(f"ended silence {s.id}: {s.comment}" for s in ended) or "no active silence to end",
              markup=False)
