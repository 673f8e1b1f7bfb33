from common.alembic_env import run_migrations
from routing.store import Base

run_migrations(Base.metadata)
