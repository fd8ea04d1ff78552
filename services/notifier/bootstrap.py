"""The notifier's composition root: settings in, the wired service and its HTTP app out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from fastapi import FastAPI

from contracts import Channel
from services.notifier.adapters.channels import Channel as Port
from services.notifier.adapters.channels import Email, Webhook
from services.notifier.adapters.store import NotifierStore
from services.notifier.api import build_api
from services.notifier.domain.routes import parse_routes
from services.notifier.metrics import NotifierMetrics
from services.notifier.render import Renderer
from services.notifier.service import Notifier
from services.notifier.settings import NotifierSettings


@dataclass
class NotifierParts:
    settings: NotifierSettings
    notifier: Notifier
    app: FastAPI


class WeakSecrets(ValueError):
    """A secret is missing or a default: the notifier does not start (the message names it)."""


def build(s: NotifierSettings) -> NotifierParts:
    """Fails at start, naming the line, when the routes file is wrong (RoutesError), and naming
    the variable when a secret is missing or weak (WeakSecrets)."""
    routes = parse_routes(s.notifier_routes.read_text())
    if weak := s.weak_secrets():
        raise WeakSecrets("; ".join(weak))
    link_secret = s.notifier_link_secret.get_secret_value().encode()
    renderer = Renderer(
        routes, s.notifier_public_url, link_secret, timedelta(hours=s.notifier_link_ttl_hours)
    )
    password = s.notifier_smtp_password.get_secret_value() if s.notifier_smtp_password else None
    channels: dict[Channel, Port] = {
        Channel.EMAIL: Email(
            s.notifier_smtp_host, s.notifier_smtp_port, s.notifier_smtp_from,
            user=s.notifier_smtp_user, password=password, starttls=s.notifier_smtp_starttls,
        ),
        Channel.WEBHOOK: Webhook(s.notifier_webhook_secret.get_secret_value().encode()),
    }  # fmt: skip
    notifier = Notifier(
        s.kafka_bootstrap,
        routes,
        NotifierStore(s.notifier_database_url),
        renderer,
        channels,
        NotifierMetrics(),
        tick_s=s.notifier_tick_s,
        retry_max_s=s.notifier_retry_max_s,
        fail_after=s.notifier_channel_fail_after,
    )
    secure = s.notifier_public_url.startswith("https://")
    app = build_api(notifier, link_secret, s.tokens(), secure=secure)
    return NotifierParts(s, notifier, app)
