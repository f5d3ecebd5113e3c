"""Detectors store their label trigger: null in ``retrain_every_n_labels`` now means off.

Before, null meant the default of 10 and automatic retraining could not be turned off;
new detectors now get 10 written, and this gives existing ones the value they ran with.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("UPDATE detectors SET retrain_every_n_labels = 10 WHERE retrain_every_n_labels IS NULL")


def downgrade() -> None:
    # Nothing to undo: 10 means 10 under both readings, and null (off) reads as 10 before.
    pass
