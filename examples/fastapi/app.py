"""A FastAPI app that enqueues in its request's transaction, and the async job
that a worker runs: examples/fastapi/README.md walks through it.

    pip install 'conveyor' fastapi uvicorn
    DATABASE_URL=postgresql://localhost/shop uvicorn app:app          # the API
    conveyor worker jobs.py --database-url postgresql://localhost/shop  # the worker
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import psycopg
from fastapi import Depends, FastAPI
from psycopg_pool import AsyncConnectionPool

import conveyor.aio
from jobs import SendReceipt

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql:///conveyor_example")

pool = AsyncConnectionPool(DATABASE_URL, open=False, min_size=1, max_size=10)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await pool.open()
    async with pool.connection() as conn:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS orders (id bigserial PRIMARY KEY, email text NOT NULL,"
            " receipt_sent_at timestamptz)"
        )
    yield
    await pool.close()


app = FastAPI(lifespan=lifespan)


async def transaction() -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """One connection per request; it commits when the handler returns and
    rolls back if it raises -- the order and its job together."""
    async with pool.connection() as conn:
        yield conn


Connection = Annotated[psycopg.AsyncConnection[Any], Depends(transaction)]


@app.post("/orders")
async def create_order(email: str, conn: Connection) -> dict[str, int | None]:
    cursor = await conn.execute("INSERT INTO orders (email) VALUES (%s) RETURNING id", (email,))
    row = await cursor.fetchone()
    assert row is not None
    order_id: int = row[0]
    # In the same transaction: no order without its receipt job, no job for an
    # order that was rolled back.
    job_id = await conveyor.aio.enqueue(conn, SendReceipt, order_id, queue="mail")
    return {"order_id": order_id, "job_id": job_id}


@app.get("/orders/{order_id}")
async def show_order(order_id: int, conn: Connection) -> dict[str, Any]:
    cursor = await conn.execute(
        "SELECT email, receipt_sent_at FROM orders WHERE id = %s", (order_id,)
    )
    row = await cursor.fetchone()
    if row is None:
        return {"order_id": order_id, "found": False}
    return {"order_id": order_id, "email": row[0], "receipt_sent_at": row[1]}
