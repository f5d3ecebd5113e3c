"""The cloud model's scores of the queries it answered, for the review page's panel.

``model_scores``: ``{"probabilities": {class: p}, "in_domain": p | null}``; null for every
query stored before and for queries no cloud model answered.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("image_queries", sa.Column("model_scores", sa.JSON(), nullable=True))


def downgrade() -> None:
    # batch mode: SQLite cannot drop a column in place.
    with op.batch_alter_table("image_queries") as batch:
        batch.drop_column("model_scores")
