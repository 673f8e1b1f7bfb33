"""webhook signing secrets are stored encrypted (`enc:v1:` + a Fernet token, ~170 characters): wider columns

Existing secrets stay in clear until `POST /v1/admin/rotate-secrets` encrypts them; they are read either way.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_endpoints", schema=None) as batch_op:
        batch_op.alter_column("secret", existing_type=sa.String(length=128), type_=sa.Text(), existing_nullable=False)
        batch_op.alter_column(
            "previous_secret", existing_type=sa.String(length=128), type_=sa.Text(), existing_nullable=True
        )


def downgrade() -> None:
    with op.batch_alter_table("webhook_endpoints", schema=None) as batch_op:
        batch_op.alter_column("previous_secret", existing_type=sa.Text(), type_=sa.String(length=128))
        batch_op.alter_column("secret", existing_type=sa.Text(), type_=sa.String(length=128))
