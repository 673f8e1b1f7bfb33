from common.alembic_env import run_migrations
from scoring.store import Base

run_migrations(Base.metadata)
