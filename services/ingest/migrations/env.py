from common.alembic_env import run_migrations
from ingest.store import Base

run_migrations(Base.metadata)
