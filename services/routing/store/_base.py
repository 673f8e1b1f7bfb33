"""What every routing repository holds: the caller's session (the entrypoint owns its transaction)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession


class Repository:
    """Repositories add, flush and query; they never commit."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def _on_postgres(self) -> bool:
        bind = self.session.bind
        return bind is not None and bind.dialect.name == "postgresql"
