"""A route's session comes from the request: committed before the answer leaves, rolled back when the route fails,
and a commit that fails is a 503, never a 2xx (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from sqlalchemy import Column, Integer, MetaData, String, Table, select
from sqlalchemy.ext.asyncio import create_async_engine

from common.db import Database
from common.session import ReadSession, Transaction
from common.web import install_error_handlers

pytestmark = pytest.mark.integration

metadata = MetaData()
notes = Table("notes", metadata, Column("id", Integer, primary_key=True), Column("body", String(40), unique=True))


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Database]]:
    engine = create_async_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
        await conn.execute(notes.insert().values(id=1, body="taken"))
    await engine.dispose()
    db = Database(database_url)
    app = FastAPI()
    install_error_handlers(app)
    app.state.runtime = SimpleNamespace(db=db)

    @app.post("/notes/{note_id}", status_code=201)
    async def add(note_id: int, body: str, session: Transaction) -> dict[str, int]:
        await session.execute(notes.insert().values(id=note_id, body=body))
        if body == "refuse":
            raise HTTPException(404, "no")
        return {"id": note_id}

    @app.get("/notes")
    async def listed(session: ReadSession) -> list[str]:
        return list((await session.execute(select(notes.c.body).order_by(notes.c.id))).scalars())

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        yield http, db
    await db.dispose()


async def test_a_2xx_means_committed_and_a_failed_route_stores_nothing(
    client: tuple[httpx.AsyncClient, Database],
) -> None:
    http, _ = client
    assert (await http.post("/notes/2", params={"body": "kept"})).status_code == 201
    assert (await http.get("/notes")).json() == ["taken", "kept"]  # another session sees it: it was committed
    assert (await http.post("/notes/3", params={"body": "refuse"})).status_code == 404
    assert (await http.get("/notes")).json() == ["taken", "kept"]


async def test_a_write_the_store_refuses_is_a_503_not_a_2xx(client: tuple[httpx.AsyncClient, Database]) -> None:
    http, _ = client
    refused = await http.post("/notes/4", params={"body": "taken"})  # violates the unique body
    assert refused.status_code == 503 and "retry-after" in refused.headers
    assert (await http.get("/notes")).json() == ["taken"]
