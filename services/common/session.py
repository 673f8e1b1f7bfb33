"""The request owns the transaction: a route takes its session from one of these dependencies and never opens one.

`scope="function"` ends the dependency (the COMMIT) after the route function returns and before the response is
sent, so a 2xx always means committed, and a commit that fails becomes the store-error answer (503), never a 2xx.
Anything the route raises (a 404, a 422) rolls the transaction back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession


async def _transaction(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.runtime.db.transaction() as session:
        yield session


async def _read(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.runtime.db.read() as session:
        yield session


Transaction = Annotated[AsyncSession, Depends(_transaction, scope="function")]
"""A session inside one transaction, committed before the response leaves."""

ReadSession = Annotated[AsyncSession, Depends(_read, scope="function")]
"""A read-only session (on SQLite's WAL it never waits for the writer)."""
