"""Who is told of what, on which channel, and who next when nobody acknowledges: the routes file.

Pure: the YAML text in, a validated `Routes` out, or `RoutesError` naming the line and the
reason. No file system here (the caller reads the file), no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contracts import Channel, Severity

SENDABLE = (Channel.EMAIL, Channel.WEBHOOK)  # the live page shows every alert; nobody routes it


class RoutesError(ValueError):
    """The routes file is not usable: each problem with its line (1-based) and reason."""

    def __init__(self, problems: list[tuple[int | None, str]]) -> None:
        self.problems = problems
        super().__init__(
            "; ".join(f"line {line}: {why}" if line else why for line, why in problems)
        )


class Recipient(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+$")
    webhook: str | None = Field(default=None, pattern=r"^https?://\S+$")

    def address(self, channel: Channel) -> str | None:
        return self.email if channel is Channel.EMAIL else self.webhook


class Match(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    severity: tuple[Severity, ...] = ()  # empty: any
    rule: tuple[str, ...] = ()  # empty: any

    def takes(self, severity: Severity, rule_id: str) -> bool:
        return (not self.severity or severity in self.severity) and (
            not self.rule or rule_id in self.rule
        )


class Route(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    match: Match = Match()
    to: tuple[str, ...] = Field(min_length=1)
    channels: tuple[Channel, ...] = (Channel.EMAIL,)


class Step(BaseModel):
    """One level of the escalation chain: who is told when the alert is still unacknowledged
    `after_minutes` after it was raised."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    after_minutes: float = Field(gt=0)
    to: str
    channels: tuple[Channel, ...] = (Channel.EMAIL,)


class Routes(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    recipients: dict[str, Recipient] = Field(min_length=1)
    routes: tuple[Route, ...] = Field(min_length=1)
    escalation: tuple[Step, ...] = ()
    escalate_severities: tuple[Severity, ...] = (Severity.CRITICAL,)
    reminder_before_due_hours: float = Field(4.0, ge=0)
    group_window_seconds: float = Field(60.0, ge=0)

    def problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """What the schema cannot see: names that refer to nothing, channels nobody can
        send on, a chain whose windows shrink, a recipient with no address."""
        out: list[tuple[tuple[str | int, ...], str]] = []
        for n, route in enumerate(self.routes):
            for i, name in enumerate(route.to):
                if name not in self.recipients:
                    out.append((("routes", n, "to", i), f"{name!r} is not in recipients"))
            for i, channel in enumerate(route.channels):
                if channel not in SENDABLE:
                    out.append((("routes", n, "channels", i), f"{channel} is not sent to anyone"))
        for n, step in enumerate(self.escalation):
            if step.to not in self.recipients:
                out.append((("escalation", n, "to"), f"{step.to!r} is not in recipients"))
            if n and step.after_minutes <= self.escalation[n - 1].after_minutes:
                out.append(
                    (("escalation", n, "after_minutes"), "must be later than the level before")
                )
        for name, r in self.recipients.items():
            if r.email is None and r.webhook is None:
                out.append((("recipients", name), "needs an email or a webhook"))
        return out

    def deliveries(self, severity: Severity, rule_id: str) -> list[Delivery]:
        """Every (recipient, channel) an alert of this severity and rule goes to, once each;
        a channel the recipient has no address for is left out."""
        out: dict[tuple[str, Channel], Delivery] = {}
        for route in self.routes:
            if not route.match.takes(severity, rule_id):
                continue
            for name in route.to:
                for channel in route.channels:
                    address = self.recipients[name].address(channel)
                    if address is not None:
                        out.setdefault((name, channel), Delivery(name, channel, address))
        return list(out.values())

    def instead(self, failed: Delivery) -> list[Delivery]:
        """Where to send what one channel could not: the recipient's other channels; if they
        have none, the first person of the escalation chain on theirs (a message that cannot
        go one way must go another)."""

        def on_others(name: str, but: Channel | None) -> list[Delivery]:
            person = self.recipients.get(name)
            if person is None:
                return []
            return [
                Delivery(name, ch, address)
                for ch in (Channel.EMAIL, Channel.WEBHOOK)
                if ch is not but and (address := person.address(ch)) is not None
            ]

        found = on_others(failed.recipient, failed.channel)
        if not found and self.escalation and self.escalation[0].to != failed.recipient:
            found = on_others(self.escalation[0].to, None)
        return found

    def step(self, level: int) -> Step | None:
        """The escalation step at `level` (1-based), None past the end of the chain."""
        return self.escalation[level - 1] if 0 < level <= len(self.escalation) else None


@dataclass(frozen=True)
class Delivery:
    recipient: str
    channel: Channel
    address: str


def parse_routes(text: str) -> Routes:
    """The routes in `text`; RoutesError names the line of each problem."""
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        # where the construct began (a key without its colon), else where the parser stopped
        mark = getattr(e, "context_mark", None) or getattr(e, "problem_mark", None)
        raise RoutesError([(mark.line + 1 if mark else None, f"not YAML: {e}")]) from None
    if not isinstance(data, dict):
        raise RoutesError([(1, "the routes file must be a mapping (recipients, routes, ...)")])
    try:
        routes = Routes.model_validate(data)
    except ValidationError as e:
        raise RoutesError(
            [
                (_line(node, err["loc"]), f"{_dotted(err['loc'])}: {err['msg']}")
                for err in e.errors()
            ]
        ) from None
    if problems := routes.problems():
        raise RoutesError([(_line(node, loc), f"{_dotted(loc)}: {why}") for loc, why in problems])
    return routes


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(str(x) for x in loc) or "(file)"


def _line(node: Any, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the YAML node at `loc` (or of its nearest parent that exists)."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            found = next((v for k, v in node.value if k.value == str(key)), None)
            if found is None:
                break
            node = found
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            break
        line = node.start_mark.line + 1
    return line
