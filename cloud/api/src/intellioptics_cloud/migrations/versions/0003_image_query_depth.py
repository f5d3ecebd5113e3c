"""Image queries may come with a depth map: ``depth_blob_key`` names it in the blob store.

Null for every query stored before (none had one) and for image-only queries after.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("image_queries", sa.Column("depth_blob_key", sa.String(300), nullable=True))


def downgrade() -> None:
    # batch mode: SQLite cannot drop a column in place.
    with op.batch_alter_table("image_queries") as batch:
        batch.drop_column("depth_blob_key")
