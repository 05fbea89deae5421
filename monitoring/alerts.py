"""Alerts: SNS messages that say what happened, where, the numbers that tripped it, and what next.

Every alert goes to the environment's alert topic (``stagewise-<env>-alerts``), which e-mails the
stack's ``alertEmails``. The message body is plain text for e-mail readers; message attributes
(``event``, ``environment``, ``model``, ``severity``) let subscribers filter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SUBJECT_LIMIT = 100  # SNS Subject: at most 100 ASCII characters


@dataclass(frozen=True)
class Alert:
    """One alert.

    Attributes:
        event: machine name, e.g. ``validation.failed``, ``gate.failed``, ``step.failed``.
        title: one line, e.g. ``Validation failed: 2 expectations``.
        environment, model: where it happened; ``version`` when one is involved.
        details: what happened, in sentences.
        numbers: the values that tripped it (``{"failed expectations": 2, ...}``).
        next_steps: what the reader should do.
        severity: ``critical``, ``warning`` or ``info``.
        links: where to look (S3 URIs of reports, Data Docs).
    """

    event: str
    title: str
    environment: str
    model: str
    details: str
    next_steps: str
    version: int | None = None
    numbers: dict[str, Any] = field(default_factory=dict)
    severity: str = "critical"
    links: dict[str, str] = field(default_factory=dict)
    run_id: str | None = None

    @property
    def subject(self) -> str:
        """E-mail subject: ``[Stagewise dev] engagement: <title>``, cut to SNS's 100 characters."""
        text = f"[Stagewise {self.environment}] {self.model}: {self.title}"
        text = text.encode("ascii", "replace").decode()
        return text if len(text) <= SUBJECT_LIMIT else text[: SUBJECT_LIMIT - 3] + "..."

    def body(self) -> str:
        """The plain-text message."""
        lines = [
            self.title,
            "",
            f"Environment: {self.environment}",
            f"Model:       {self.model}",
            f"Version:     {self.version if self.version is not None else '-'}",
        ]
        if self.run_id:
            lines.append(f"Run:         {self.run_id}")
        lines += ["", "What happened:", self.details]
        if self.numbers:
            lines += ["", "Numbers:"] + [f"  - {k}: {v}" for k, v in self.numbers.items()]
        if self.links:
            lines += ["", "Where to look:"] + [f"  - {k}: {v}" for k, v in self.links.items()]
        lines += ["", "What to do next:", self.next_steps]
        return "\n".join(lines)


def publish_alert(sns: Any, topic_arn: str, alert: Alert) -> str:
    """Publish ``alert`` to the topic; returns the SNS MessageId.

    Raises:
        botocore.exceptions.ClientError: the publish failed.
    """
    attrs = {
        "event": alert.event,
        "environment": alert.environment,
        "model": alert.model,
        "severity": alert.severity,
    }
    resp = sns.publish(
        TopicArn=topic_arn,
        Subject=alert.subject,
        Message=alert.body(),
        MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in attrs.items()},
    )
    return resp["MessageId"]
