"""The `safety-monitor` command: parses arguments, builds settings, calls one job (the text an
operator reads is ABOUT and JOBS below)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pydantic import ValidationError

if TYPE_CHECKING:
    from services.ingest.bootstrap import IngestParts


def _kafka(args: argparse.Namespace) -> int:
    from deploy.kafka.launcher import KafkaLauncher, KafkaSettings, LauncherError, ensure_topics

    launcher = KafkaLauncher(KafkaSettings())
    try:
        if args.action == "topics":
            bootstrap = args.bootstrap or launcher.bootstrap
            created = ensure_topics(bootstrap, replication_factor=args.replication_factor)
            print(f"created {', '.join(created)}" if created else "all catalog topics exist")
        elif args.action == "fetch":
            print(f"kafka jars in {launcher.fetch()}")
        elif args.action == "up":
            print(launcher.up())
            print(f"bootstrap: {launcher.bootstrap}")
        elif args.action == "down":
            was = launcher.down(purge=args.purge)
            print("kafka stopped" if was else "kafka was not running")
        else:
            status = launcher.status()
            print(status)
            return 0 if status.running else 3
    except LauncherError as e:
        print(f"safety-monitor kafka {args.action}: {e}", file=sys.stderr)
        return 2
    return 0


def _contracts(args: argparse.Namespace) -> int:
    from contracts import export

    if args.action == "export":
        for path in export.export():
            print(f"wrote {path}")
        return 0
    problems = export.stale()
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print("run `safety-monitor contracts export` and commit the result", file=sys.stderr)
    return 1 if problems else 0


def _demo(args: argparse.Namespace) -> int:
    from deploy.kafka.launcher import KafkaSettings, LauncherError
    from services import demo

    try:
        return demo.run(KafkaSettings(), once=args.once)
    except LauncherError as e:
        print(f"safety-monitor demo: {e}", file=sys.stderr)
        return 2


def _evaluate(args: argparse.Namespace) -> int:
    from services.safety_rules import evaluate
    from services.safety_rules.rules_config import load_rules

    as_of = None
    if args.as_of:
        try:
            as_of = datetime.fromisoformat(args.as_of)
        except ValueError:
            print(f"--as-of: {args.as_of!r} is not an ISO 8601 timestamp", file=sys.stderr)
            return 2
        if as_of.tzinfo is None:
            print("--as-of: give a time zone (e.g. 2026-06-01T00:00:00Z)", file=sys.stderr)
            return 2
    cfg = load_rules(Path(args.rules) if args.rules else None)
    try:
        with open(args.events, encoding="utf-8") as lines:
            alerts = evaluate.run_all(evaluate.read_events(lines), cfg, as_of)
    except evaluate.BadLine as e:
        print(f"safety-monitor evaluate: {args.events}: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"safety-monitor evaluate: {e}", file=sys.stderr)
        return 2
    evaluate.write(alerts, sys.stdout)
    return 0


def _rules(args: argparse.Namespace) -> int:
    import asyncio

    from services.logs import configure
    from services.safety_rules.service import serve
    from services.safety_rules.settings import RulesSettings

    configure("safety_rules")
    return asyncio.run(serve(RulesSettings()))


def _notifier(args: argparse.Namespace) -> int:
    import asyncio

    from services.logs import configure
    from services.notifier.bootstrap import WeakSecrets, build
    from services.notifier.domain.routes import RoutesError
    from services.notifier.settings import NotifierSettings
    from services.web import serve_beside

    configure("notifier")
    settings = NotifierSettings()
    try:
        parts = build(settings)
    except RoutesError as e:
        print(f"{settings.notifier_routes}: {e}", file=sys.stderr)
        return 2
    except WeakSecrets as e:
        print(f"notifier: refusing to start: {e}", file=sys.stderr)
        return 2

    async def run(stop: asyncio.Event) -> int:
        try:
            await parts.notifier.run(stop)
        finally:
            await parts.notifier.store.close()
        return 0

    host, port = args.host or settings.notifier_host, args.port or settings.notifier_port
    return asyncio.run(serve_beside(parts.app, host, port, run))


def _ingest(args: argparse.Namespace) -> int:
    import asyncio

    import uvicorn

    from services.ingest.bootstrap import build
    from services.ingest.domain.policy import Role
    from services.ingest.settings import IngestSettings

    parts = build(IngestSettings())
    if args.action == "serve":
        from services.logs import configure
        from services.web import HeaderTimeout

        configure("ingest")
        s = parts.settings
        # uvicorn: graceful shutdown on SIGTERM (in-flight requests finish, lifespan closes)
        uvicorn.run(
            parts.app,
            host=args.host or s.ingest_host,
            port=args.port or s.ingest_port,
            log_level="info",
            access_log=False,
            log_config=None,  # keep the JSON handler configure() installed
            http=HeaderTimeout,
        )
        return 0
    if args.action == "import":
        return asyncio.run(_import(parts, args))
    if args.action == "keys":

        async def keys() -> int:
            await parts.store.create()
            try:
                if args.revoke:
                    ok = await parts.store.revoke_key(args.revoke)
                    print("revoked" if ok else f"no key {args.revoke}")
                    return 0 if ok else 1
                if args.role == "site" and not args.site:
                    print("--site is required for a site key", file=sys.stderr)
                    return 2
                key_id, secret = await parts.store.add_key(Role(args.role), args.site)
                print(f"key_id: {key_id}\nsecret: {secret}\n(shown once; only its hash is stored)")
                return 0
            finally:
                await parts.store.close()

        return asyncio.run(keys())
    return 2


async def _import(parts: IngestParts, args: argparse.Namespace) -> int:
    from zoneinfo import ZoneInfo

    from services.ingest.adapters.kafka_log import LogUnavailable
    from services.ingest.domain.policy import Principal, Role
    from services.ingest.importer import import_sdtm, in_domain_order

    if not args.files:
        print("safety-monitor ingest import: name at least one file", file=sys.stderr)
        return 2
    zone = ZoneInfo(parts.settings.ingest_site_timezone)
    who = Principal(key_id="cli-import", role=Role.ADMIN, site_id=None)
    report_dir = Path(args.report_dir)
    await parts.store.create()
    code = 0
    try:
        for path in in_domain_order([Path(f) for f in args.files]):
            try:
                data = path.read_bytes()
                summary = await import_sdtm(
                    path.name, data, parts.ingest, who, zone, progress=not args.no_progress
                )
            except (OSError, ValueError) as e:
                print(f"safety-monitor ingest import: {e}", file=sys.stderr)
                code = 2
                continue
            except LogUnavailable as e:
                print(
                    f"safety-monitor ingest import: {e}; run it again: "
                    "what was accepted is recognised",
                    file=sys.stderr,
                )
                return 3
            report = report_dir / f"{path.stem}-rejections.csv"
            summary.write_report(report)
            print(summary.render())
            print(f"  every rejected row with its reason: {report}")
            print(f"  times are read in {zone.key} (SAFETY_MONITOR_INGEST_SITE_TIMEZONE)")
    finally:
        await parts.log.close()
        await parts.store.close()
    return code


def _audit(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from services.audit.adapters.store import AuditReader, AuditStore, TokenStore
    from services.audit.anchors import Anchors
    from services.audit.domain.chain import key_id
    from services.audit.keys import public_hex, signing_key, trusted_keys
    from services.audit.settings import AuditSettings
    from services.sql import Held

    settings = AuditSettings()
    url = settings.audit_database_url
    if url.startswith("sqlite") and ":///" in url:
        Path(url.split(":///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
    store = AuditStore(url)

    if args.action == "serve":
        import uvicorn

        from services.audit.api import create_app
        from services.logs import configure
        from services.web import HeaderTimeout

        configure("audit")
        uvicorn.run(
            create_app(
                store,
                trusted_keys(settings),
                Anchors(settings.kafka_bootstrap, settings.audit_anchor_file),
                signer=key_id(signing_key(settings).public_key()),
            ),
            host=args.host or settings.audit_host,
            port=args.port or settings.audit_port,
            access_log=False,
            log_config=None,
            http=HeaderTimeout,
        )
        return 0

    async def main() -> int:
        await store.migrate()
        try:
            if args.action == "project":
                from services.audit import watch
                from services.audit.adapters.store import ForeignRows
                from services.logs import configure

                configure("audit")
                key = signing_key(settings)
                print(f"checkpoints signed by Ed25519 key {public_hex(key)}", file=sys.stderr)
                try:
                    return await watch.run(
                        settings,
                        store,
                        key,
                        args.host or settings.audit_projection_host,
                        args.port or settings.audit_projection_port,
                    )
                except Held:
                    print(
                        "another `audit project` writes this database's chain (one writer per "
                        "chain); this one stops",
                        file=sys.stderr,
                    )
                    return 75
                except ForeignRows as e:
                    print(
                        f"audit project: stopped: the trail holds a row the projection did not "
                        f"write ({e}); nothing is signed over it. `audit verify` names it.",
                        file=sys.stderr,
                    )
                    return 70
                return 0
            if args.action == "rebuild":
                from services.audit.rebuild import rebuild

                n = await rebuild(settings.kafka_bootstrap, store, progress=True)
                print(f"read models rebuilt from {n} events")
                return 0
            if args.action == "verify":
                from services.audit.verification import against_log, deep, verified

                trusted = trusted_keys(settings)
                anchors = Anchors(settings.kafka_bootstrap, settings.audit_anchor_file)
                signer = key_id(signing_key(settings).public_key())
                verdict = await verified(store, trusted, anchors, signer=signer)
                out: dict[str, object] = verdict.as_dict()
                ok = verdict.ok
                deeper: list[tuple[str, list[str]]] = []
                if args.against_log:
                    deeper.append(
                        ("against_log", await against_log(settings.kafka_bootstrap, store))
                    )
                if args.deep:
                    deeper.append(("deep", await deep(store)))
                for name, problems in deeper:
                    out[name] = {"ok": not problems, "problems": problems[:100]}
                    ok = ok and not problems
                out["ok"] = ok
                print(json.dumps(out))
                return 0 if ok else 1
            if args.action == "rotate-key":
                return await _rotate_key(settings, args)
            if args.action == "tokens":
                tokens = TokenStore(store)
                if args.revoke:
                    if not await tokens.revoke(args.revoke):
                        print(f"no token {args.revoke}", file=sys.stderr)
                        return 1
                    print(f"token {args.revoke} revoked")
                    return 0
                if args.list:
                    for row in await tokens.listing():
                        print(json.dumps(row, default=str))
                    return 0
                token_id, secret = await tokens.add(args.name or "dsmb")
                print(f"token_id: {token_id}\ntoken: {secret}\n(shown once; only its hash is kept)")
                return 0
            from services.audit.report import WhichTrial, render_report

            try:
                page = await render_report(AuditReader(store), trial_id=args.trial)
            except WhichTrial as e:
                print(f"safety-monitor report: --trial: {e}", file=sys.stderr)
                return 2
            Path(args.out).write_text(page)
            print(f"report written to {args.out}")
            if getattr(args, "pdf", None):
                return _pdf(Path(args.out), Path(args.pdf))
            return 0
        finally:
            await store.close()

    return asyncio.run(main())


async def _rotate_key(settings: Any, args: argparse.Namespace) -> int:
    """The signing key handed on: the current key signs the new one's public key on the anchor
    topic (and file); then point SAFETY_MONITOR_AUDIT_SIGNING_KEY_FILE at the new file. A key
    swapped without this fails `audit verify`."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    from services.audit.anchors import Anchors
    from services.audit.domain.chain import rotate
    from services.audit.keys import signing_key

    if not args.new_key_file:
        print("audit rotate-key: --new-key-file is required", file=sys.stderr)
        return 2
    path = Path(args.new_key_file)
    new = Ed25519PrivateKey.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never over a key
    with os.fdopen(fd, "w") as f:
        f.write(new.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()).hex())
    rotation = rotate(signing_key(settings), new.public_key(), new_chain=args.new_chain)
    await Anchors(settings.kafka_bootstrap, settings.audit_anchor_file).publish_rotation(rotation)
    print(
        f"rotation anchored: key {rotation.key_id} hands the chain to {rotation.to_key_id}; now "
        f"set SAFETY_MONITOR_AUDIT_SIGNING_KEY_FILE={path} and restart the projection"
    )
    return 0


def _pdf(page: Path, out: Path) -> int:
    """The report as PDF, printed by headless Chromium (Debian `chromium`) with the network off."""
    import shutil
    import subprocess
    import tempfile

    chromium = shutil.which("chromium")
    if chromium is None:
        print("--pdf needs chromium (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update", "--no-first-run",
             f"--user-data-dir={profile}", "--no-pdf-header-footer",
             f"--print-to-pdf={out.resolve()}", page.resolve().as_uri()],
            capture_output=True, timeout=120, check=False,
        )  # fmt: skip
    if done.returncode != 0 or not out.exists():
        print(f"chromium could not print the report: {done.stderr[-500:]!r}", file=sys.stderr)
        return 1
    print(f"PDF written to {out}")
    return 0


def _report(args: argparse.Namespace) -> int:
    args.action = "report"
    return _audit(args)


ABOUT = """\
Safety monitoring for the UC-MSC diabetic nephropathy trial: lab results and adverse events
come in through the ingest API (JSON, FHIR R4, CDISC SDTM) onto Kafka; the rules worker raises
safety alerts (a serious AE, acute kidney injury, a sharp eGFR decline, ...) within seconds; the
notifier tells the safety officer by email and webhook and tracks acknowledgement; the audit
projection keeps a hash-chained, signed trail the DSMB queries and verifies.

Every service reads its settings from SAFETY_MONITOR_* environment variables and serves
/healthz, /readyz and /metrics."""

JOBS = """\
examples:
  safety-monitor demo
  safety-monitor kafka up
  safety-monitor ingest serve --port 8001
  safety-monitor rules worker
  safety-monitor <job> --help"""


def _job(
    sub: Any, name: str, summary: str, description: str, examples: list[str]
) -> argparse.ArgumentParser:
    """A subcommand whose help says what it is for and shows how it is run."""
    return cast(
        argparse.ArgumentParser,
        sub.add_parser(
            name,
            help=summary,
            description=description,
            epilog="examples:\n" + "\n".join(f"  {e}" for e in examples),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        ),
    )


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    from deploy.kafka.launcher import KafkaSettings

    try:
        ours = installed("trial-safety-monitor")
    except PackageNotFoundError:  # run from a checkout that was not installed
        ours = "unknown"
    return f"safety-monitor {ours} (Apache Kafka {KafkaSettings().version}, KRaft)"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="safety-monitor",
        description=ABOUT,
        epilog=JOBS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=version())
    sub = p.add_subparsers(dest="command", required=True, metavar="<job>")

    kafka = _job(
        sub, "kafka", "the local Apache Kafka broker (KRaft, single node)",
        "The broker the demo and the tests use: its jars fetched with Maven into "
        "~/.cache/safety-monitor/kafka, its storage in .local/kafka.",
        ["safety-monitor kafka up", "safety-monitor kafka status",
         "safety-monitor kafka topics --bootstrap kafka-1:9092 --replication-factor 3",
         "safety-monitor kafka down --purge"],
    )  # fmt: skip
    kafka.add_argument("action", choices=["up", "down", "status", "fetch", "topics"])
    kafka.add_argument("--purge", action="store_true", help="with down: delete its data too")
    kafka.add_argument("--bootstrap", help="with topics: another broker (default: the local one)")
    kafka.add_argument(
        "--replication-factor", type=int, default=1, help="with topics: 3 in production"
    )
    kafka.set_defaults(func=_kafka)

    contracts = _job(
        sub, "contracts", "JSON Schemas and the AsyncAPI document",
        "Writes the event contract's schemas (export) or checks the committed ones match the "
        "code (check).",
        ["safety-monitor contracts export", "safety-monitor contracts check"],
    )  # fmt: skip
    contracts.add_argument("action", choices=["export", "check"])
    contracts.set_defaults(func=_contracts)

    ingest = _job(
        sub, "ingest", "the ingest service: JSON, FHIR R4, CDISC SDTM",
        "serve: the HTTP API (OpenAPI at /docs); keys: make or revoke an API key (a site key "
        "writes for its site only); import: SDTM DM/EX/LB/AE/DS files, row by row, with a report "
        "of what was rejected and why.",
        ["safety-monitor ingest serve --port 8001",
         "safety-monitor ingest keys --role site --site sardjito",
         "safety-monitor ingest keys --revoke 3f2a9c0d1e7b",
         "safety-monitor ingest import dm.xpt ex.xpt lb.xpt ae.xpt --report-dir reports/"],
    )  # fmt: skip
    ingest.add_argument("action", choices=["serve", "keys", "import"])
    ingest.add_argument("files", nargs="*", help="with import: SDTM DM/EX/LB/AE/DS .csv or .xpt")
    ingest.add_argument("--report-dir", default=".local/imports", help="with import")
    ingest.add_argument("--no-progress", action="store_true", help="with import")
    ingest.add_argument("--host")
    ingest.add_argument("--port", type=int)
    ingest.add_argument("--role", choices=["site", "admin"], default="site", help="with keys")
    ingest.add_argument("--site", help="with keys: the site a site key writes for")
    ingest.add_argument("--revoke", metavar="KEY_ID", help="with keys: revoke a key")
    ingest.set_defaults(func=_ingest)

    audit = _job(
        sub, "audit", "the hash-chained audit log and the DSMB API",
        "project: keep the trail from the topics (one per database); verify: check the chain, "
        "its signed checkpoints and anchors; serve: the DSMB's read-only API; tokens: DSMB "
        "access; rebuild: the trail again from the topics.",
        ["safety-monitor audit project", "safety-monitor audit verify --against-log --deep",
         "safety-monitor audit serve --port 8004",
         "safety-monitor audit tokens --name 'DSMB chair'", "safety-monitor audit tokens --list"],
    )  # fmt: skip
    audit.add_argument(
        "action", choices=["project", "rebuild", "verify", "serve", "tokens", "rotate-key"]
    )
    audit.add_argument(
        "--new-key-file", help="rotate-key: where the new signing key is written (mode 0600)"
    )
    audit.add_argument(
        "--new-chain",
        action="store_true",
        help="rotate-key: for a chain projected afresh into a new database (the old key's "
        "anchors stay with the old one)",
    )
    audit.add_argument("--host")
    audit.add_argument("--port", type=int)
    audit.add_argument("--name", help="with tokens: who the DSMB token is for")
    audit.add_argument("--revoke", metavar="TOKEN_ID", help="with tokens: revoke a DSMB token")
    audit.add_argument("--list", action="store_true", help="with tokens: list tokens (no secrets)")
    audit.add_argument(
        "--against-log",
        action="store_true",
        help="with verify: recompute every row from the topics up to the stored offsets",
    )
    audit.add_argument(
        "--deep",
        action="store_true",
        help="with verify: rebuild the read models into shadow tables and compare",
    )
    audit.set_defaults(func=_audit)

    report = _job(
        sub, "report", "write the DSMB report (self-contained HTML)",
        "The DSMB report from the audit trail's read models: one HTML file, optionally a PDF.",
        ["safety-monitor report --out dsmb-2026-11.html",
         "safety-monitor report --out dsmb.html --pdf dsmb.pdf",
         "safety-monitor report --trial UCMSC-DN-01 --out dsmb.html"],
    )  # fmt: skip
    report.add_argument("--out", default="report.html")
    report.add_argument("--pdf", help="also print it to this PDF with headless Chromium")
    report.add_argument(
        "--trial", help="the trial (needed when the trail holds several), e.g. UCMSC-DN-01"
    )
    report.set_defaults(func=_report)

    notifier = _job(
        sub, "notifier", "email, webhooks and acknowledgement of alerts",
        "Routes each alert to people (services/notifier/routes.yaml or NOTIFIER_ROUTES), "
        "escalates what is not acknowledged in time, serves the live alert page.",
        ["SAFETY_MONITOR_NOTIFIER_SMTP_HOST=smtp.example.org safety-monitor notifier serve"],
    )  # fmt: skip
    notifier.add_argument("action", choices=["serve"])
    notifier.add_argument("--host")
    notifier.add_argument("--port", type=int)
    notifier.set_defaults(func=_notifier)

    rules = _job(
        sub, "rules", "the safety rules stream worker",
        "Consumes trial.events, raises alerts on safety.alerts; start more with the same "
        "RULES_APP_ID to share the partitions (and a stable RULES_INSTANCE_ID each for fast "
        "restarts).",
        ["safety-monitor rules worker",
         "SAFETY_MONITOR_RULES_INSTANCE_ID=rules-1 safety-monitor rules worker"],
    )  # fmt: skip
    rules.add_argument("action", choices=["worker"])
    rules.set_defaults(func=_rules)

    ev = _job(
        sub, "evaluate", "run the safety rules offline over a JSONL event file",
        "The worker's rules, offline: one alert per line on stdout, in the order raised.",
        ["safety-monitor evaluate tests/scenarios/creatinine.aki.jsonl",
         "safety-monitor evaluate events.jsonl --as-of 2026-06-01T00:00:00Z > alerts.jsonl"],
    )  # fmt: skip
    ev.add_argument("events", help="JSONL file, one event per line (flat JSON as in contracts/)")
    ev.add_argument("--as-of", help="evaluate time-based rules at this time (default: last event)")
    ev.add_argument("--rules", help="thresholds file (default: services/safety_rules/rules.yaml)")
    ev.set_defaults(func=_evaluate)

    demo = _job(
        sub, "demo", "local demo of the whole stack on embedded defaults",
        "The broker, ingest, the rules worker, the notifier with a local SMTP sink and the audit "
        "trail, on SQLite in .local/; the sample trial goes through them, and the result is "
        "checked (non-zero exit if the stream disagrees with evaluate or the trail does not "
        "verify). Then the stack keeps serving, with Prometheus if installed, and the URLs to "
        "open are printed, until Ctrl-C stops every process (--once: exit after the check).",
        ["safety-monitor demo", "safety-monitor demo --once", "make demo"],
    )  # fmt: skip
    demo.add_argument(
        "--once", action="store_true", help="run the story, check it, and exit (CI); no serving"
    )
    demo.set_defaults(func=_demo)

    from services.bench import PHASES

    bench = _job(
        sub, "bench", "measure the stack's speed on its own broker (prints a table, writes JSON)",
        "Starts its own broker and the real services, measures each phase, prints a table "
        "against the targets and writes JSON with the machine described.",
        ["safety-monitor bench", "safety-monitor bench --only pipeline,latency --events 60000",
         "safety-monitor bench --only ingest,e2e --json ingest.json",
         "safety-monitor bench --only ingest --ingest-processes 2",
         "safety-monitor bench --only ingest --ingest-processes 2 "
         "--ingest-db postgresql+asyncpg://u:p@127.0.0.1/empty_db"],
    )  # fmt: skip
    bench.add_argument("--events", type=int, default=20_000, help="the backlog's size")
    bench.add_argument("--participants", type=int, default=2_500, help="the backlog's people")
    bench.add_argument("--json", type=Path, help="default: benchmarks/results/bench-<time>.json")
    bench.add_argument(
        "--only", default=",".join(PHASES), help=f"comma-separated phases of {','.join(PHASES)}"
    )
    bench.add_argument("--rate", type=float, default=1000.0, help="offered events/s (latency)")
    bench.add_argument("--workdir", type=Path, help="keep the services' logs and data here")
    bench.add_argument(
        "--ingest-db",
        help="an empty database for ingest (postgresql+asyncpg://...); default: SQLite in the "
        "workdir",
    )
    bench.add_argument(
        "--ingest-processes", type=int, default=1,
        help="ingest processes on that database, the clients spread over them",
    )  # fmt: skip
    bench.set_defaults(func=_bench)
    return p


def _bench(args: argparse.Namespace) -> int:
    from services import bench
    from services.bench import PHASES

    only = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(only) - set(PHASES))
    why = None
    if unknown:
        why = f"unknown phase {unknown}"
    elif args.events < 1 or args.participants < 1 or args.ingest_processes < 1:
        why = "--events, --participants and --ingest-processes must be > 0"
    if why:
        print(f"safety-monitor bench: {why}", file=sys.stderr)
        return 2
    return bench.run(
        args.events, args.participants, args.json, only, args.rate, args.workdir,
        ingest_db=args.ingest_db, ingest_processes=args.ingest_processes,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ValidationError as e:  # settings from the environment
        print(f"safety-monitor: invalid settings:\n{e}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
