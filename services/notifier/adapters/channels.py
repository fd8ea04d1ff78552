"""The two ways out: email over SMTP (aiosmtplib) and webhooks (httpx). Each send is
idempotent on the receiver's side: the email's Message-ID and the webhook's Idempotency-Key are
the outbox key, so a send repeated after a crash is recognisable as the same message."""

from __future__ import annotations

import hashlib
from email.message import EmailMessage
from typing import Protocol

import aiosmtplib
import httpx

from contracts.common import summary
from services.notifier.domain.tokens import signature
from services.notifier.render import SUBJECT_MAX, Rendered


class Channel(Protocol):
    async def send(self, key: str, address: str, message: Rendered) -> None: ...


def message_id(key: str, domain: str) -> str:
    """The same outbox key always gives the same Message-ID."""
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@{domain}>"


class Email:
    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        *,
        user: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout_s: float = 15,
    ) -> None:
        self.host, self.port, self.sender = host, port, sender
        self.user, self.password, self.starttls, self.timeout = user, password, starttls, timeout_s

    def build(self, key: str, address: str, message: Rendered) -> EmailMessage:
        """The message as sent; every header one line (the subject is a summary)."""
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = address
        mail["Subject"] = summary(message.subject, SUBJECT_MAX)
        mail["Message-ID"] = message_id(key, self.sender.rsplit("@", 1)[-1])
        mail["X-Safety-Monitor-Key"] = summary(key, 900)
        mail.set_content(message.text)
        mail.add_alternative(message.html, subtype="html")
        return mail

    async def send(self, key: str, address: str, message: Rendered) -> None:
        await aiosmtplib.send(
            self.build(key, address, message),
            hostname=self.host,
            port=self.port,
            username=self.user,
            password=self.password,
            start_tls=self.starttls,
            timeout=self.timeout,
        )


class Webhook:
    def __init__(self, secret: bytes, timeout_s: float = 10) -> None:
        self.secret, self.timeout = secret, timeout_s

    async def send(self, key: str, address: str, message: Rendered) -> None:
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": key,
            "X-Safety-Monitor-Signature": signature(self.secret, message.json_body),
        }
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            response = await client.post(address, content=message.json_body, headers=headers)
            response.raise_for_status()
