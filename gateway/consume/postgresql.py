"""The ``postgresql`` consumer: Centrifugo's outbox table, through psycopg 3 (async). The only
module that imports psycopg.

The table (Centrifugo v6's, ``internal/consuming/postgresql.go``)::

    CREATE TABLE centrifugo_outbox (
        id BIGSERIAL PRIMARY KEY,
        method TEXT NOT NULL,          -- "" = payload is {"method", "payload"}
        payload JSONB NOT NULL,
        partition INTEGER NOT NULL DEFAULT 0,
        created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL
    );

Each of ``num_partitions`` partitions is consumed by the one worker of the node that
``owner("<name>:<partition>", workers)`` names, over its own connection. One pass is one
transaction: take the partition's advisory transaction lock (``pg_advisory_xact_lock``, or
``pg_try_advisory_xact_lock`` with ``use_try_lock``; the lock name is Centrifugo's, so nodes
and Centrifugo instances never consume one partition at once), select up to
``partition_select_limit`` rows in id order, apply them one by one through the server API
executor, delete the applied ones, commit. A refused row is logged, counted and deleted as
Centrifugo does; an internal or temporary error stops the pass there (the rows before it are
deleted, it and the rest stay, in order) and the partition retries after a backoff. Between
passes a partition waits ``partition_poll_interval`` or a NOTIFY on
``partition_notification_channel`` whose payload is its number.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any

import psycopg
from psycopg import sql

from gateway.config.consumers import PostgresConsumerConfig
from gateway.consume.backoff import backoff_delay
from gateway.consume.message import Dispatcher, Refused, Verdict, decode_outbox_row
from gateway.obs.stats import ConsumerStats

__all__ = ["OutboxConsumer"]

log = logging.getLogger("shardgate.consume.postgresql")


class _LockBusy(Exception):
    """Another consumer holds the partition (use_try_lock)."""


class _Retry(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def _wait(event: asyncio.Event, timeout: float) -> None:
    """Until ``event`` (a NOTIFY) or ``timeout``; clears the event for the next pass."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)
    event.clear()


class OutboxConsumer:
    """This worker's partitions of one outbox consumer; :meth:`run` until cancelled."""

    def __init__(self, name: str, cfg: PostgresConsumerConfig, partitions: list[int], dispatcher: Dispatcher,
                 stats: ConsumerStats, rng: random.Random) -> None:
        self.name = name
        self.cfg = cfg
        self.partitions = partitions
        self._dispatcher = dispatcher
        self._stats = stats
        self._rng = rng
        self._table = sql.Identifier(*cfg.outbox_table_name.split("."))
        self._wakes = {p: asyncio.Event() for p in partitions}

    async def run(self) -> None:
        jobs = [self._partition(p) for p in self.partitions]
        if self.cfg.partition_notification_channel:
            jobs.append(self._listen())
        log.info("consumer %s: outbox %s partitions %s", self.name, self.cfg.outbox_table_name, self.partitions)
        await asyncio.gather(*jobs)

    async def _partition(self, partition: int) -> None:
        cfg = self.cfg
        wake = self._wakes[partition]
        attempt = 0
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(cfg.dsn) as conn:
                    while True:
                        try:
                            count = await self._pass(conn, partition)
                        except _LockBusy:
                            await _wait(wake, cfg.partition_poll_interval)
                            continue
                        except _Retry as exc:
                            attempt += 1
                            self._stats.retried += 1
                            delay = backoff_delay(attempt, 0.1, 10.0, self._rng)
                            log.warning("consumer %s: partition %d: %s, retry in %.2fs", self.name, partition,
                                        exc.reason, delay)
                            await asyncio.sleep(delay)
                            continue
                        attempt = 0
                        if count < cfg.partition_select_limit:
                            await _wait(wake, cfg.partition_poll_interval)
            except (psycopg.Error, OSError) as exc:
                attempt += 1
                delay = backoff_delay(attempt, 0.1, 10.0, self._rng)
                log.warning("consumer %s: partition %d: PostgreSQL: %s, again in %.2fs", self.name, partition,
                            str(exc).strip(), delay)
                await asyncio.sleep(delay)

    async def _pass(self, conn: psycopg.AsyncConnection[Any], partition: int) -> int:
        """One transaction over the partition; the number of rows it selected.

        Raises:
            _LockBusy: use_try_lock and the lock is held elsewhere (nothing done).
            _Retry: a row hit an internal or temporary error; the rows before it were deleted.
        """
        cfg = self.cfg
        retry: str = ""
        lock = f"centrifugo_partition_lock_{self.name}{partition}"
        async with conn.transaction():
            if cfg.use_try_lock:
                cur = await conn.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s))", (lock,))
                row = await cur.fetchone()
                if not (row and row[0]):
                    raise _LockBusy
            else:
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (lock,))
            query = sql.SQL("SELECT id, method, payload, extract(epoch FROM clock_timestamp() - created_at)::float8 "
                            "FROM {} WHERE partition = %s ORDER BY id ASC LIMIT %s").format(self._table)
            cur = await conn.execute(query, (partition, cfg.partition_select_limit))
            rows = await cur.fetchall()
            done: list[int] = []
            for row_id, method, payload, age in rows:
                try:
                    request = decode_outbox_row(self.name, row_id, method or "", payload)
                except Refused as exc:
                    self._refused(row_id, exc.reason)
                    done.append(row_id)
                    continue
                outcome = await self._dispatcher.apply(request)
                if outcome.verdict is Verdict.RETRY:
                    retry = f"row {row_id}: {outcome.reason}"
                    break
                if outcome.verdict is Verdict.REFUSED:
                    self._refused(row_id, outcome.reason)
                else:
                    self._stats.applied += 1
                    self._stats.lag = max(0.0, float(age or 0.0))
                done.append(row_id)
            if done:
                await conn.execute(sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(self._table), (done,))
        if retry:
            raise _Retry(retry)
        return len(rows)

    def _refused(self, row_id: int, reason: str) -> None:
        self._stats.refused += 1
        log.error("consumer %s: skipping outbox row %d: %s", self.name, row_id, reason)

    async def _listen(self) -> None:
        cfg = self.cfg
        attempt = 0
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(cfg.partition_notification_dsn or cfg.dsn,
                                                                 autocommit=True) as conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(cfg.partition_notification_channel)))
                    attempt = 0
                    for wake in self._wakes.values():  # whatever was notified while not listening
                        wake.set()
                    async for note in conn.notifies():
                        try:
                            partition = int(note.payload)
                        except ValueError:
                            continue
                        if partition in self._wakes:
                            self._wakes[partition].set()
            except (psycopg.Error, OSError) as exc:
                attempt += 1
                log.warning("consumer %s: LISTEN %s: %s", self.name, cfg.partition_notification_channel,
                            str(exc).strip())
                await asyncio.sleep(backoff_delay(attempt, 0.1, 10.0, self._rng))
