"""What every service's SQL store shares: how an engine is made, Alembic migrations run once
under a lock, and the lock that lets only one process write what must have one writer."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Connection,
    Dialect,
    Engine,
    String,
    TypeDecorator,
    bindparam,
    create_engine,
    event,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import CursorResult, make_url
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

Item = TypeVar("Item")
R = TypeVar("R")
# an operation of GroupCommit: every item's write in the one (synchronous) connection given,
# a result per item, in order
Many = Callable[[Connection, list[Item]], list[R]]


# Connections a PostgreSQL engine keeps open (SQLAlchemy's default is 5, and 10 more opened and
# closed as needed): ingest answering 16 clients at once opened and closed ten connections a
# moment, each with its TLS handshake and every statement prepared again, 5.3 ms of CPU per
# one-event request. Kept, they are opened once.
POOL_SIZE = 32


BUSY_TIMEOUT_S = 60.0


def open_engine(url: str, **options: Any) -> AsyncEngine:
    """An engine for `url`. A SQLite file is created readable by its owner only (0600: the
    databases hold birth dates and the trail); statement values never appear in an error's
    text (they would reach the logs). A PostgreSQL engine keeps up to POOL_SIZE connections."""
    if make_url(url).get_backend_name() == "postgresql":
        options = {"pool_size": POOL_SIZE, "max_overflow": POOL_SIZE} | options
    path = sqlite_path(url)
    if path is not None:
        # a writer that finds the file locked waits this long (Python's default is 5 s: a lock
        # held longer, by a backup or another process, failed every statement)
        options = {"connect_args": {"timeout": BUSY_TIMEOUT_S}} | options
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            if file.exists():  # a file made before this rule, or by another umask
                file.chmod(0o600)
    return create_async_engine(url, hide_parameters=True, **options)


def _sync(engine: AsyncEngine | Engine) -> Engine:
    return engine.sync_engine if isinstance(engine, AsyncEngine) else engine


def sqlite_wal(engine: AsyncEngine | Engine, busy_timeout_ms: int = 60_000) -> None:
    """SQLite: write-ahead logging (readers go on beside the writer, one fsync per commit) and
    a writer that finds the database locked waits up to `busy_timeout_ms` instead of failing."""

    @event.listens_for(_sync(engine), "connect")
    def _connect(dbapi_connection: Any, _: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.close()


WRITE_LOCK_AT_BEGIN = "write_lock_at_begin"  # in a connection's `info`: see sqlite_immediate


def holds_write_lock(conn: AsyncConnection | Connection) -> bool:
    """Whether `conn`'s transaction holds the database's write lock from its BEGIN: no one
    else commits between its statements."""
    return bool(conn.info.get(WRITE_LOCK_AT_BEGIN))


def sqlite_immediate(engine: AsyncEngine | Engine) -> None:
    """SQLite: each transaction of `engine` takes the write lock at BEGIN (BEGIN IMMEDIATE),
    waiting out the busy timeout for it. A deferred transaction that reads, then writes after
    another process has committed cannot wait: it fails at once with "database is locked". For
    an engine that only writes, beside a plain one for reads."""

    @event.listens_for(_sync(engine), "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver's own BEGIN off: ours below
        record.info[WRITE_LOCK_AT_BEGIN] = True

    @event.listens_for(_sync(engine), "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).resolve()


@contextlib.asynccontextmanager
async def exclusive(
    engine: AsyncEngine, name: str, *, wait: bool = True
) -> AsyncIterator[AsyncConnection | None]:
    """Holds a lock named `name` across processes for this database: a PostgreSQL advisory
    lock on a connection kept open (yielded), or for SQLite an flock on a file beside the
    database. With `wait=False` a lock held elsewhere raises `Held` at once."""
    path = sqlite_path(str(engine.url))
    if path is not None:
        fd = os.open(f"{path}.{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            flags = fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB)
            try:
                await asyncio.to_thread(fcntl.flock, fd, flags)
            except BlockingIOError:
                raise Held(name) from None
            yield None
        finally:
            os.close(fd)  # closing the descriptor releases the lock
        return
    if engine.dialect.name != "postgresql":
        yield None
        return
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
    async with engine.connect() as conn:
        if wait:
            await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        elif not (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})).scalar():
            raise Held(name)
        await conn.commit()
        try:
            yield conn
        finally:
            with contextlib.suppress(Exception):  # a lost connection released it already
                await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                await conn.commit()


class GroupCommit:
    """Concurrent callers' writes, committed together. A caller submits one item to an
    operation that takes many (`many(conn, items) -> results`, one result per item, in
    order); items submitted while a transaction is being written wait for the next one, and
    then each operation runs once for all its items, all operations in one transaction with
    one commit. SQLite has one writer and a statement costs the same for one row or a
    hundred: under load, this is most of a small write's cost saved. If the shared
    transaction fails, each item is written again alone, so one caller's failure is that
    caller's only. With PostgreSQL (concurrent writers) each item is its own transaction.

    The operations are synchronous. On SQLite every transaction runs in one thread of its own,
    on a connection of the driver's own (pysqlite) whose transactions take the write lock at
    BEGIN: through the asyncio driver each statement was a trip to the driver's thread and
    back. The thread takes the next transaction's items as soon as it has committed, and hands
    each result to its caller's event loop (`call_soon_threadsafe`). When the loop handed each
    transaction to an executor and took its results back itself, a transaction took 8-12 ms
    from hand-over to results for 6-9 ms in the thread (ingest at batches of 100, timed inside):
    the writer waited for the loop to come round between two. On PostgreSQL through
    `run_sync`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.shared = sqlite_path(str(engine.url)) is not None
        self.sync_engine: Engine | None = None
        if self.shared:
            self.sync_engine = create_engine(
                engine.url.set(drivername="sqlite"), hide_parameters=True, pool_size=1
            )
            sqlite_wal(self.sync_engine)
            sqlite_immediate(self.sync_engine)
        self._waiting: list[tuple[Many[Any, Any], Any, asyncio.Future[Any]]] = []
        self._turn = threading.Condition()  # guards _waiting, _closed and _thread
        self._closed = False
        self._thread: threading.Thread | None = None

    async def run(self, many: Many[Item, R], item: Item) -> R:
        if not self.shared:
            async with self.engine.begin() as conn:
                return (await conn.run_sync(many, [item]))[0]
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        with self._turn:
            if self._closed:
                raise RuntimeError("the writes of this database are closed")
            self._waiting.append((many, item, done))
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="sql-writes", daemon=True)
                self._thread.start()
            self._turn.notify()
        return await done

    async def close(self) -> None:
        """Writes already submitted are written; any later one fails at once."""
        if self.sync_engine is None:
            return
        with self._turn:
            self._closed = True
            self._turn.notify()
            thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join)  # the thread closes its own connection
        else:
            self.sync_engine.dispose()

    def _serve(self) -> None:
        """The writer thread: a transaction for whatever waits, until closed and none waits."""
        assert self.sync_engine is not None
        group: list[tuple[Many[Any, Any], Any, asyncio.Future[Any]]] = []
        try:
            while True:
                with self._turn:
                    while not self._waiting and not self._closed:
                        self._turn.wait()
                    if not self._waiting:
                        break
                    group, self._waiting = self._waiting, []
                _deliver(group, self._transaction(group))
                group = []
        except BaseException as e:  # no caller waits forever, whatever stopped the thread
            with self._turn:
                self._closed = True
                left, self._waiting = group + self._waiting, []
            _deliver(
                left, [(False, e if isinstance(e, Exception) else RuntimeError(e))] * len(left)
            )
            raise
        finally:
            self.sync_engine.dispose()

    def _transaction(
        self, group: list[tuple[Many[Any, Any], Any, asyncio.Future[Any]]]
    ) -> list[tuple[bool, Any]]:
        """In the writers' thread: each item's (True, result), or (False, its exception)."""
        assert self.sync_engine is not None
        by_operation: dict[Many[Any, Any], list[int]] = {}
        for n, (many, _, _) in enumerate(group):
            by_operation.setdefault(many, []).append(n)
        outcomes: list[tuple[bool, Any]] = [(False, None)] * len(group)
        try:
            with self.sync_engine.begin() as conn:
                for many, positions in by_operation.items():
                    results = many(conn, [group[n][1] for n in positions])
                    for n, result in zip(positions, results, strict=True):
                        outcomes[n] = (True, result)
            return outcomes
        except Exception:
            pass
        for n, (many, item, _) in enumerate(group):  # alone, each with its own outcome
            try:
                with self.sync_engine.begin() as conn:
                    outcomes[n] = (True, many(conn, [item])[0])
            except Exception as e:
                outcomes[n] = (False, e)
        return outcomes


def _deliver(
    group: list[tuple[Any, Any, asyncio.Future[Any]]], outcomes: list[tuple[bool, Any]]
) -> None:
    """From the writer thread: each outcome to its caller, on the caller's event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
    for (_, _, done), (ok, value) in zip(group, outcomes, strict=True):
        by_loop.setdefault(done.get_loop(), []).append((done, ok, value))
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: no one waits there
            loop.call_soon_threadsafe(_settle, settled)


def _settle(settled: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for done, ok, value in settled:
        if done.done():  # its caller was cancelled
            continue
        if ok:
            done.set_result(value)
        else:
            done.set_exception(value)


def refused_values(error: BaseException) -> bool:
    """Whether the database refused a statement for the values in it (a constraint, a value
    its column cannot hold: SQLSTATE classes 22 and 23), not for being unreachable or busy.
    Only such an error may be pinned on one message; any other is retried, never dropped."""
    if isinstance(error, IntegrityError | DataError):
        return True
    if not isinstance(error, DBAPIError) or error.connection_invalidated:
        return False
    state = str(getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", "") or "")
    return state.startswith(("22", "23"))


class Held(RuntimeError):
    """Another process holds the lock."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name}: held by another process")


# Alembic keeps its running context in module globals, and SQLAlchemy's asyncio runs each
# migration in a greenlet of the event loop's thread: two stores migrating at once in one
# process must take turns at the asyncio level (a thread lock would deadlock the loop).
_TURNS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


async def migrate(
    engine: AsyncEngine, migrations: Path, version_table: str = "alembic_version"
) -> None:
    """Runs `migrations` to head on `engine`, once however many processes start together (a
    lock per database and version table), one migration at a time in this process."""
    turn = _TURNS.setdefault(asyncio.get_running_loop(), asyncio.Lock())
    async with turn, exclusive(engine, f"migrate-{version_table}"), engine.begin() as conn:
        await conn.run_sync(upgrade, migrations, version_table)


def upgrade(
    sync_connection: Any,
    migrations: Path,
    version_table: str = "alembic_version",
    target: str = "head",
) -> None:
    """Runs `migrations` to `target` on this connection (called through `conn.run_sync`). Each
    service keeps its own version table, so two services may share one database."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations))
    cfg.attributes["connection"] = sync_connection
    cfg.attributes["version_table"] = version_table
    command.upgrade(cfg, target)


class _Texts(TypeDecorator[list[str]]):
    """A list of strings bound as one parameter: a JSON array on SQLite, an array on
    PostgreSQL."""

    impl = String
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.ARRAY(String()))
        return dialect.type_descriptor(String())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        values = list(value)
        return values if dialect.name == "postgresql" else json.dumps(values)


class _InList(ColumnElement[bool]):
    inherit_cache = True
    type = Boolean()
    _is_implicitly_boolean = True  # a condition as it is: never `... = 1` where no BOOLEAN
    _traverse_internals = [
        ("column", InternalTraversal.dp_clauseelement),
        ("values", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, column: ColumnElement[Any], values: Any) -> None:
        self.column, self.values = column, values


def in_list(column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
    """`column IN` the strings bound to parameter `name` (a list), as one parameter: SQLite's
    `IN (SELECT value FROM json_each(?))`, PostgreSQL's `= ANY(?)`. One statement text for any
    number of values: SQLAlchemy's expanding IN wrote a new text with a parameter per value at
    each execution, which cost more than SQLite's lookups of the values."""
    return _InList(column, bindparam(name, type_=_Texts()))


@compiles(_InList)
def _json_each(element: _InList, compiler: SQLCompiler, **kw: Any) -> str:
    column, values = compiler.process(element.column, **kw), compiler.process(element.values, **kw)
    return f"{column} IN (SELECT value FROM json_each({values}))"


@compiles(_InList, "postgresql")
def _any(element: _InList, compiler: SQLCompiler, **kw: Any) -> str:
    column, values = compiler.process(element.column, **kw), compiler.process(element.values, **kw)
    return f"{column} = ANY({values})"


class Prepared:
    """A statement run as its own text (`Connection.exec_driver_sql`), compiled once per dialect
    from its SQLAlchemy expression: one definition, the text each database gets.

    SQLAlchemy's execution of a cached statement (its cache key, a context, each parameter
    processed, the result's metadata) cost more than SQLite's own work on a small statement:
    ingest's writes of one event (its reservation, then its record) took 250 us of the writer
    thread through `Connection.execute` and 192 us as text, 29 and 24 us an event in batches of
    100. The parameters are processed as SQLAlchemy would (an `in_list`'s list becomes JSON on
    SQLite); the rows come back as the driver gives them (SQLite: a time as text, see `when`).
    `columns`: for an INSERT of rows, the columns each row gives, in order (`run_many`)."""

    def __init__(
        self,
        statement: Executable | Callable[[Connection], Executable],
        *,
        columns: tuple[str, ...] | None = None,
    ) -> None:
        self.statement, self.columns = statement, columns
        # by (dialect, paramstyle): one text each
        self._texts: dict[
            tuple[str, str], tuple[str, tuple[str, ...], tuple[Any, ...], dict[str, Any]]
        ] = {}

    def _text(
        self, conn: Connection
    ) -> tuple[str, tuple[str, ...], tuple[Any, ...], dict[str, Any]]:
        """The text, its parameters' names in order, their processors, and the values of those
        the expression holds itself (`column > 40`)."""
        dialect = conn.dialect
        found = self._texts.get((dialect.name, dialect.paramstyle))
        if found is None:
            statement = (
                self.statement if isinstance(self.statement, Executable) else self.statement(conn)
            )
            keys = list(self.columns) if self.columns is not None else None
            compiled = statement.compile(dialect=dialect, column_keys=keys)  # type: ignore[attr-defined]
            names = tuple(compiled.positiontup or ())
            if compiled.positiontup is None and compiled.binds:
                raise NotImplementedError(f"{dialect.name}: a named paramstyle")
            processors = tuple(
                compiled.binds[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names
            )
            held = {n: b.effective_value for n, b in compiled.binds.items() if not b.required}
            found = (str(compiled), names, processors, held)
            self._texts[dialect.name, dialect.paramstyle] = found
        return found

    def run(self, conn: Connection, params: Mapping[str, Any] | None = None) -> CursorResult[Any]:
        """The statement with `params` by name (as `Connection.execute` takes them)."""
        statement, names, processors, held = self._text(conn)
        given = {**held, **params} if params else held
        values = tuple(
            given[n] if p is None else p(given[n]) for n, p in zip(names, processors, strict=True)
        )
        return conn.exec_driver_sql(statement, values)

    def run_many(self, conn: Connection, rows: Sequence[Sequence[Any]]) -> None:
        """The statement once per row, each row's values in `columns`' order."""
        if not rows:
            return
        statement, names, processors, _ = self._text(conn)
        assert self.columns is not None and names == self.columns, (names, self.columns)
        if any(p is not None for p in processors):
            rows = [
                tuple(v if p is None else p(v) for v, p in zip(row, processors, strict=True))
                for row in rows
            ]
        conn.exec_driver_sql(statement, rows if isinstance(rows, list) else list(rows))


def when(value: Any) -> datetime:
    """A time column's value as the driver gives it, as an aware datetime: SQLite keeps text
    (`2026-11-26 13:05:00`, with or without microseconds) and no zone, which is UTC."""
    at = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def insert_for(conn: Any) -> Any:
    """INSERT with ON CONFLICT (do nothing / do update), in the connection's dialect."""
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def run_env() -> None:
    """The body of each service's migrations/env.py."""
    from alembic import context

    attributes = context.config.attributes
    context.configure(
        connection=attributes["connection"],
        target_metadata=None,
        version_table=attributes.get("version_table", "alembic_version"),
    )
    with context.begin_transaction():
        context.run_migrations()
