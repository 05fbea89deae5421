"""``stagewise alerts``: who receives an environment's alerts, and the alerts themselves.

    stagewise alerts subscribe EMAIL   subscribe an address to the alert topic (protocol email)
    stagewise alerts list              every subscription of the topic, its status and where it came from
    stagewise alerts tail              print the alerts of the embedded AWS, read through an SQS queue

Every alert goes to the environment's SNS topic ``stagewise-<env>-alerts`` (see
``monitoring.alerts``). The stack file's ``alertEmails`` are subscribed by the Pulumi stack (on AWS)
or by provisioning (on the embedded AWS); ``subscribe`` adds more addresses by hand.

**Confirmation.** On AWS an e-mail subscription stays *pending confirmation*, and receives nothing,
until its owner clicks the link in the confirmation e-mail AWS sends. ``ListSubscriptionsByTopic``
then reports ``SubscriptionArn == "PendingConfirmation"`` (or, for a subscription created with
``ReturnSubscriptionArn``, a real ARN whose ``PendingConfirmation`` attribute is ``"true"``); both
are shown as ``pending confirmation``. The embedded AWS (moto 5) sends no e-mail and confirms e-mail
subscriptions at once: a real ARN and ``PendingConfirmation = "false"``, so there every address is
shown as ``confirmed``. The commands say so.

**Tail.** SNS has no "read the messages" call: a topic only pushes to its subscribers. On the
embedded AWS ``tail`` reads through an SQS queue ``stagewise-<env>-alerts-tail`` that it creates and
subscribes on first use (``ensure_tail_queue``; environment provisioning can call it up front). The
queue only receives alerts published *after* it was subscribed. With ``--aws`` ``tail`` is refused
(exit 4): a read command must not create queues in a real account; there, read alerts by e-mail or
subscribe your own SQS queue or AWS Chatbot channel to the topic.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Optional

import typer
from botocore.exceptions import ClientError
from rich.markup import escape
from rich.table import Table

from stagewise.platform.cli import AWS_OPT, ENV_OPT, JSON_OPT, emit_json, err, fail, handles_errors, out
from stagewise.platform.contract import ExitCode
from stagewise.platform.runtime.environment import Environment, connect
from stagewise.platform.runtime.provision import TailQueue, tail_queue_name
from stagewise.platform.runtime.provision import ensure_tail_queue as provision_tail_queue
from stagewise.platform.resources import EnvironmentResources, environment_resources
from stagewise.stacks.settings import EMAIL_MAX_LENGTH, EMAIL_PATTERN, load_settings

alerts_app = typer.Typer(
    help="Alert e-mails and alerts: subscribe an address to an environment's SNS alert topic, list the "
    "subscriptions, tail the alerts (embedded AWS).",
    no_args_is_help=True,
)

# the pattern the stack file's alertEmails are checked with (stacks.settings), so both agree
CONFIRMED = "confirmed"
PENDING = "pending confirmation"
DELETED = "deleted"
SOURCE_STACK = "stack"  # listed in the stack file's alertEmails
SOURCE_TAIL = "tail"  # the queue of `stagewise alerts tail`
SOURCE_MANUAL = "manual"  # added by hand (`stagewise alerts subscribe`, the console, another tool)
SOURCE_LABELS = {SOURCE_STACK: "stack file (alertEmails)", SOURCE_TAIL: "stagewise alerts tail", SOURCE_MANUAL: "added by hand"}
SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}
SQS_MAX_WAIT = 20  # ReceiveMessage WaitTimeSeconds limit
SQS_MAX_BATCH = 10  # ReceiveMessage MaxNumberOfMessages limit
EMBEDDED_CONFIRMATION_NOTE = (
    "the embedded AWS (moto) sends no e-mail and confirms e-mail subscriptions at once; on AWS a new "
    "address stays 'pending confirmation' until the link in the confirmation e-mail is clicked"
)


class TailUnavailable(RuntimeError):
    """The alerts tail queue is only created on the embedded AWS, never in a real account."""


# ------------------------------------------------------------------------------- subscriptions
@dataclass(frozen=True)
class Subscription:
    """One subscription of the alert topic.

    Attributes:
        protocol: SNS protocol: ``email``, ``sqs``, ``https``, ...
        endpoint: the address, queue ARN or URL.
        status: ``confirmed``, ``pending confirmation`` or ``deleted`` (being removed).
        source: ``stack`` (the stack file's ``alertEmails``), ``tail`` (the queue of
            ``stagewise alerts tail``) or ``manual`` (added by hand).
        subscription_arn: the subscription's ARN; None while AWS reports it only as pending.
    """

    protocol: str
    endpoint: str
    status: str
    source: str
    subscription_arn: str | None




def _source(protocol: str, endpoint: str, resources: EnvironmentResources) -> str:
    if protocol == "email" and endpoint.lower() in {e.lower() for e in resources.alert_topic.emails}:
        return SOURCE_STACK
    if protocol == "sqs" and endpoint == resources.arn("sqs", tail_queue_name(resources)):
        return SOURCE_TAIL
    return SOURCE_MANUAL


def _status(sns: Any, subscription_arn: str) -> str:
    """Confirmation status of one subscription, from its ARN and ``GetSubscriptionAttributes``."""
    if subscription_arn == "PendingConfirmation":
        return PENDING
    if subscription_arn == "Deleted":
        return DELETED
    try:
        attrs = sns.get_subscription_attributes(SubscriptionArn=subscription_arn)["Attributes"]
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") == "NotFound":
            return DELETED  # unsubscribed between the list and this call
        raise
    return PENDING if str(attrs.get("PendingConfirmation", "false")).lower() == "true" else CONFIRMED


def list_subscriptions(conn: Environment) -> list[Subscription]:
    """Every subscription of the environment's alert topic (all pages), with status and source.

    Args:
        conn: the connected environment.

    Returns:
        The subscriptions in the order SNS lists them.

    Raises:
        botocore.exceptions.ClientError: the topic does not exist, or access was denied.
    """
    sns = conn.clients.client("sns")
    subs = []
    for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=conn.resources.alert_topic_arn):
        for s in page["Subscriptions"]:
            arn = s["SubscriptionArn"]
            subs.append(Subscription(
                protocol=s["Protocol"],
                endpoint=s["Endpoint"],
                status=_status(sns, arn),
                source=_source(s["Protocol"], s["Endpoint"], conn.resources),
                subscription_arn=arn if arn.startswith("arn:") else None,
            ))
    return subs


def _where(conn: Environment) -> str:
    return "the embedded AWS" if conn.embedded else f"AWS account {conn.settings.account_id}"


@alerts_app.command("subscribe")
@handles_errors
def subscribe(
    email: str = typer.Argument(..., help="The address to send the environment's alerts to."),
    env: str = ENV_OPT,
    aws: bool = AWS_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Subscribe EMAIL to the environment's alert topic (SNS protocol email).

    AWS sends a confirmation e-mail to the address; the subscription stays pending confirmation, and
    the address receives no alert, until the link in that e-mail is clicked (check with
    `stagewise alerts list`). The embedded AWS (moto) sends no e-mail and confirms at once.

    An address already subscribed (confirmed or pending, in any letter case) is reported as such
    and not subscribed again. Addresses the whole team needs belong in the stack file's alertEmails.
    Exit 4 if EMAIL is not an address or the topic does not exist.

    Examples:

      stagewise alerts subscribe oncall@example.com --env prod
    """
    address = email.strip()
    if len(address) > EMAIL_MAX_LENGTH or not re.fullmatch(EMAIL_PATTERN, address):
        fail(f"{email!r} is not an e-mail address", ExitCode.BAD_INPUT, as_json, hint="give one address like name@example.com")
    conn = connect(env, aws=aws, provision=True)  # on the embedded AWS: make sure the topic exists
    topic_arn = conn.resources.alert_topic_arn
    existing = next(
        (s for s in list_subscriptions(conn)
         if s.protocol == "email" and s.endpoint.lower() == address.lower() and s.status != DELETED),
        None,
    )
    if existing:
        sub, created = existing, False
    else:
        sns = conn.clients.client("sns")
        arn = sns.subscribe(TopicArn=topic_arn, Protocol="email", Endpoint=address, ReturnSubscriptionArn=True)["SubscriptionArn"]
        sub = Subscription("email", address, _status(sns, arn), _source("email", address, conn.resources),
                           arn if arn.startswith("arn:") else None)
        created = True
    if conn.embedded:
        note = EMBEDDED_CONFIRMATION_NOTE
    elif sub.status == PENDING:
        note = (f"AWS has sent a confirmation e-mail to {sub.endpoint}: the subscription stays pending, and receives "
                "no alert, until the link in it is clicked" if created else
                f"{sub.endpoint} has not confirmed yet: the subscription stays pending, and receives no alert, until "
                "the link in AWS's confirmation e-mail is clicked")
    else:
        note = None
    if as_json:
        emit_json({"environment": env, "topic_arn": topic_arn, "embedded": conn.embedded, "created": created,
                   **asdict(sub), "note": note})
        return
    if created:
        out.print(f"subscribed [bold]{escape(address)}[/] to {conn.resources.alert_topic.name} on {_where(conn)}: "
                  f"[{'green' if sub.status == CONFIRMED else 'yellow'}]{sub.status}[/]")
    else:
        out.print(f"{escape(sub.endpoint)} is already subscribed to {conn.resources.alert_topic.name} "
                  f"({sub.status}; {SOURCE_LABELS[sub.source]}); nothing changed")
    if conn.embedded:
        out.print(f"[dim]note: {EMBEDDED_CONFIRMATION_NOTE}[/]")
    elif note:
        out.print(f"{escape(note)}. Check with `stagewise alerts list --env {env} --aws`.")


@alerts_app.command("list")
@handles_errors
def list_command(env: str = ENV_OPT, aws: bool = AWS_OPT, as_json: bool = JSON_OPT) -> None:
    """List every subscription of the environment's alert topic, with its confirmation status.

    For each: protocol, endpoint, status (confirmed or pending confirmation) and source: the stack
    file's alertEmails, the queue of `stagewise alerts tail`, or added by hand. Addresses of
    alertEmails missing from the topic are named too (deploying the stack adds them).

    The embedded AWS (moto) confirms e-mail subscriptions at once, so there all show confirmed.

    Examples:

      stagewise alerts list --env prod --json
    """
    conn = connect(env, aws=aws, provision=True)
    subs = list_subscriptions(conn)
    subscribed = {s.endpoint.lower() for s in subs if s.protocol == "email" and s.status != DELETED}
    missing = [e for e in conn.settings.alert_emails if e.lower() not in subscribed]
    if as_json:
        emit_json({"environment": env, "topic_arn": conn.resources.alert_topic_arn, "embedded": conn.embedded,
                   "subscriptions": [asdict(s) for s in subs], "stack_emails_not_subscribed": missing,
                   "note": EMBEDDED_CONFIRMATION_NOTE if conn.embedded else None})
        return
    if not subs:
        out.print(f"{conn.resources.alert_topic.name} has no subscriptions on {_where(conn)}")
    else:
        table = Table(title=f"{conn.resources.alert_topic.name} subscriptions ({env}, {_where(conn)})")
        for col in ("protocol", "endpoint", "status", "source", "subscription"):
            table.add_column(col, overflow="fold")
        for s in subs:
            style = {CONFIRMED: "green", PENDING: "yellow"}.get(s.status, "dim")
            table.add_row(s.protocol, escape(s.endpoint), f"[{style}]{s.status}[/]", SOURCE_LABELS[s.source],
                          s.subscription_arn.rsplit(":", 1)[-1] if s.subscription_arn else "-")
        out.print(table)
    if missing:
        out.print(f"[yellow]in the stack file's alertEmails but not subscribed:[/] {escape(', '.join(missing))} "
                  f"(`pulumi up -s {env}` subscribes them)")
    if conn.embedded:
        out.print(f"[dim]note: {EMBEDDED_CONFIRMATION_NOTE}[/]")


# ------------------------------------------------------------------------------- tail
def _ensure_tail_queue(conn: Environment) -> TailQueue:
    if not conn.embedded:
        raise TailUnavailable(
            f"the alerts tail queue is only created on the embedded AWS, not in AWS account {conn.settings.account_id}")
    return provision_tail_queue(conn.clients, conn.resources)


def ensure_tail_queue(conn: Environment) -> str:
    """Create (idempotently) the queue ``stagewise-<env>-alerts-tail`` and subscribe it to the topic.

    The queue gets a policy that lets only the environment's alert topic send to it. It receives
    the alerts published after it was subscribed; environment provisioning creates it up front
    (``platform.provision.ensure_environment``).

    Args:
        conn: an environment connected to the embedded AWS, its alert topic provisioned.

    Returns:
        The queue URL.

    Raises:
        TailUnavailable: ``conn`` is a real AWS account (no queue is created there).
        botocore.exceptions.ClientError: an SQS or SNS call failed.
    """
    return _ensure_tail_queue(conn).url


@dataclass(frozen=True)
class TailedAlert:
    """One alert read from the tail queue (the JSON Lines record of ``tail --json``)."""

    time: str
    subject: str | None
    message: str
    attributes: dict[str, str]
    message_id: str | None


def _parse(message: dict[str, Any]) -> TailedAlert | None:
    """The alert in an SQS message: an SNS notification envelope, or a raw delivery. None for other
    SNS envelopes (a ``SubscriptionConfirmation``)."""
    body = message.get("Body", "")
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and "Type" in doc and "TopicArn" in doc:
        if doc["Type"] != "Notification":
            return None
        attrs = {k: str(v.get("Value")) for k, v in (doc.get("MessageAttributes") or {}).items()}
        return TailedAlert(doc.get("Timestamp", ""), doc.get("Subject"), doc.get("Message", ""), attrs, doc.get("MessageId"))
    # raw message delivery: the body is the message, attributes are SQS message attributes
    sent = int(message.get("Attributes", {}).get("SentTimestamp", "0")) / 1000
    at = datetime.fromtimestamp(sent, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    attrs = {k: str(v.get("StringValue", "")) for k, v in (message.get("MessageAttributes") or {}).items()}
    return TailedAlert(at, None, body, attrs, message.get("MessageId"))


def _published_at(alert: TailedAlert) -> datetime | None:
    try:
        return datetime.fromisoformat(alert.time.replace("Z", "+00:00"))
    except ValueError:
        return None


def _drain(sqs: Any, url: str, *, follow: bool, wait: int, limit: int | None, since: datetime | None,
           as_json: bool) -> tuple[int, int]:
    """Receive (long polling), print and delete alerts until done.

    Without ``follow`` it stops once the queue stayed empty for ``wait`` seconds; with it, only on
    ``limit`` or Ctrl-C. It never asks for more messages than ``limit`` still allows, so the rest stay
    queued and visible.

    Returns:
        ``(shown, skipped)``: alerts printed, and alerts discarded as published before ``since``.
    """
    shown = skipped = 0
    idle_until = time.monotonic() + wait
    while limit is None or shown < limit:
        poll = SQS_MAX_WAIT if follow else max(0, min(SQS_MAX_WAIT, math.ceil(idle_until - time.monotonic())))
        messages = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=SQS_MAX_BATCH if limit is None else min(SQS_MAX_BATCH, limit - shown),
            WaitTimeSeconds=poll, AttributeNames=["SentTimestamp"], MessageAttributeNames=["All"],
        ).get("Messages", [])
        for message in messages:
            alert = _parse(message)
            published = _published_at(alert) if alert else None
            if alert is not None and since is not None and published is not None and published < since:
                skipped += 1
            elif alert is not None:
                _print_alert(alert, as_json)  # printed, then deleted: a crash in between shows it again
                shown += 1
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        if messages:
            idle_until = time.monotonic() + wait
        elif not follow and time.monotonic() >= idle_until:
            break
    return shown, skipped


def _print_alert(alert: TailedAlert, as_json: bool) -> None:
    if as_json:  # JSON Lines: one compact object per alert, flushed so pipes see it at once
        sys.stdout.write(json.dumps({"time": alert.time, "subject": alert.subject, "message": alert.message,
                                     "attributes": alert.attributes}) + "\n")
        sys.stdout.flush()
        return
    severity = alert.attributes.get("severity", "")
    head = f"[bold]{escape(alert.time)}[/]"
    if severity:
        head += f"  [{SEVERITY_STYLE.get(severity, 'bold')}]{escape(severity)}[/]"
    if alert.attributes.get("event"):
        head += f"  [dim]{escape(alert.attributes['event'])}[/]"
    out.print(head)
    if alert.subject:
        out.print(alert.subject, style="bold", markup=False, highlight=False, soft_wrap=True)
    out.print(alert.message, markup=False, highlight=False, soft_wrap=True)
    out.print()


def _refuse_on_aws(env: str, as_json: bool) -> None:
    """Exit 4 before any AWS call: reading the stack file is all it does."""
    topic_arn = environment_resources(load_settings(env)).alert_topic_arn
    fail(
        "`stagewise alerts tail` works on the embedded AWS only: on a real account it would have to create an SQS "
        f"queue and subscribe it to {topic_arn}, and a read command does not create resources in your account",
        ExitCode.BAD_INPUT, as_json,
        hint=f"read the alerts by e-mail (`stagewise alerts subscribe you@example.com --env {env} --aws`), or "
        f"subscribe your own SQS queue or AWS Chatbot channel to {topic_arn}",
    )


@alerts_app.command("tail")
@handles_errors
def tail(
    env: str = ENV_OPT,
    follow: bool = typer.Option(False, "--follow/--no-follow", "-f", help="Keep waiting for new alerts until Ctrl-C "
                                "(default: print the alerts waiting in the queue and exit)."),
    since_start: bool = typer.Option(False, "--since-start", help="Show only alerts published after this command "
                                     "started; older ones still queued are discarded (deleted) and counted."),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", min=1, help="Stop after N alerts; the rest stay queued."),
    wait: int = typer.Option(2, "--wait", min=0, help="Without --follow: exit once no alert arrived for this many "
                             "seconds (long polling, at most 20 s per receive)."),
    aws: bool = typer.Option(False, "--aws", help="Refused (exit 4): tail would create a queue in the real account; "
                             "read alerts by e-mail or subscribe your own SQS queue or Chatbot there."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON Lines: one {time, subject, message, attributes} "
                                 "object per alert (also without --follow; no alerts prints nothing)."),
) -> None:
    """Print the alerts of the environment (embedded AWS only), oldest first, then delete them.

    Alerts are read through the SQS queue stagewise-<env>-alerts-tail, subscribed to the alert topic:
    created and subscribed on first use (provisioning can do it up front), it holds only the alerts
    published after that. Each alert shows its time, severity, event, subject and message (what
    happened, environment, model, version, numbers, what to do next).

    Without --follow it prints what is queued and exits 0; with --follow it waits for more until
    Ctrl-C (exit 0). With --aws it is refused (exit 4) before any AWS call; exit 5 if the embedded
    AWS is not running.

    Examples:

      stagewise alerts tail --env dev --follow
    """
    if aws:
        _refuse_on_aws(env, as_json)
    started = datetime.now(timezone.utc)
    conn = connect(env, provision=True)
    queue = _ensure_tail_queue(conn)
    sqs = conn.clients.client("sqs")
    if queue.subscribed_now:
        err.print(f"[dim]subscribed {tail_queue_name(conn.resources)} to {conn.resources.alert_topic.name} just now: "
                  "it holds only alerts published from now on[/]")
    if follow and not as_json:
        err.print(f"[dim]following alerts of {conn.resources.alert_topic.name} ({env}); Ctrl-C to stop[/]")
    try:
        shown, skipped = _drain(sqs, queue.url, follow=follow, wait=wait, limit=limit,
                                since=started if since_start else None, as_json=as_json)
    except KeyboardInterrupt:
        # Ctrl-C ends --follow (exit 0); a message received but not yet deleted reappears later
        if not as_json:
            err.print("[dim]stopped[/]")
        return
    if not as_json:
        summary = f"{shown} alert{'s' if shown != 1 else ''}" if shown else f"no new alerts on {conn.resources.alert_topic.name}"
        if skipped:
            summary += f"; discarded {skipped} published before this command started"
        err.print(f"[dim]{summary} ({env}, queue {tail_queue_name(conn.resources)})[/]")
