"""Initial schema: accounts, tokens, detectors, image queries, labels, review queue,
model registry, edges, training jobs and the database work queue.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _fk(column: str, target: str) -> sa.Column:
    return sa.Column(column, sa.String(64), sa.ForeignKey(target, ondelete="CASCADE"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("account_id", sa.Integer(), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("username", sa.String(100), nullable=False),
        sa.Column("email", sa.String(200), nullable=False),
        sa.Column("is_superuser", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_users_account_id", "users", ["account_id"])
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("account_id", sa.Integer(), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
        _fk("user_id", "users.id"),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("snippet", sa.String(20), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_api_tokens_account_id", "api_tokens", ["account_id"])
    op.create_index("ix_api_tokens_snippet", "api_tokens", ["snippet"])
    op.create_table(
        "detector_groups",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("account_id", sa.Integer(), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("uq_detector_groups_account_name", "detector_groups", ["account_id", "name"], unique=True)
    op.create_table(
        "detectors",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("account_id", sa.Integer(), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("query", sa.String(300), nullable=False),
        sa.Column("group_name", sa.String(100), nullable=False),
        sa.Column("confidence_threshold", sa.Float(), nullable=False),
        sa.Column("patience_time", sa.Float(), nullable=False),
        sa.Column("metadata_json", sa.JSON(), nullable=True),
        sa.Column("mode", sa.String(20), nullable=False),
        sa.Column("mode_configuration", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("escalation_type", sa.String(30), nullable=False),
        sa.Column("pipeline_config", sa.String(100), nullable=True),
        sa.Column("retrain_every_n_labels", sa.Integer(), nullable=True),
        sa.Column("promotion_policy", sa.String(10), nullable=False),
        sa.Column("active_model_version", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("uq_detectors_account_name", "detectors", ["account_id", "name"], unique=True)
    op.create_table(
        "image_queries",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("account_id", sa.Integer(), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
        _fk("detector_id", "detectors.id"),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("query", sa.String(300), nullable=False),
        sa.Column("result_type", sa.String(40), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("confidence_threshold", sa.Float(), nullable=False),
        sa.Column("patience_time", sa.Float(), nullable=False),
        sa.Column("metadata_json", sa.JSON(), nullable=True),
        sa.Column("rois", sa.JSON(), nullable=True),
        sa.Column("done_processing", sa.Boolean(), nullable=False),
        sa.Column("human_review", sa.String(10), nullable=False),
        sa.Column("inspection_id", sa.String(100), nullable=True),
        sa.Column("image_blob_key", sa.String(300), nullable=False),
        sa.Column("image_sha256", sa.String(64), nullable=False),
        sa.Column("image_content_type", sa.String(40), nullable=False),
        sa.Column("from_edge", sa.Boolean(), nullable=False),
        sa.Column("escalation_reason", sa.String(40), nullable=True),
        sa.Column("edge_result", sa.JSON(), nullable=True),
        sa.Column("model_version", sa.Integer(), nullable=True),
    )
    op.create_index("ix_image_queries_detector_id", "image_queries", ["detector_id"])
    op.create_index(
        "ix_image_queries_account_detector_created", "image_queries", ["account_id", "detector_id", "created_at"]
    )
    op.create_table(
        "labels",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("account_id", sa.Integer(), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
        _fk("detector_id", "detectors.id"),
        _fk("image_query_id", "image_queries.id"),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("rois", sa.JSON(), nullable=True),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=True),
        sa.Column("previous_result", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_labels_detector_id", "labels", ["detector_id"])
    op.create_index("ix_labels_image_query_id", "labels", ["image_query_id"])
    op.create_table(
        "review_items",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("account_id", sa.Integer(), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
        _fk("detector_id", "detectors.id"),
        sa.Column(
            "image_query_id",
            sa.String(64),
            sa.ForeignKey("image_queries.id", ondelete="CASCADE"),
            nullable=False,
            unique=True,
        ),
        sa.Column("reason", sa.String(40), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("claimed_by", sa.String(64), nullable=True),
        sa.Column("claimed_by_name", sa.String(100), nullable=True),
        sa.Column("claim_expires_at", sa.DateTime(), nullable=True),
        sa.Column("skipped_by", sa.JSON(), nullable=True),
        sa.Column("label", sa.String(100), nullable=True),
        sa.Column("label_id", sa.String(64), nullable=True),
        sa.Column("labeled_by", sa.String(64), nullable=True),
        sa.Column("labeled_at", sa.DateTime(), nullable=True),
        sa.Column("sort_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_review_items_detector_id", "review_items", ["detector_id"])
    op.create_index("ix_review_items_queue", "review_items", ["account_id", "status", "sort_at"])
    op.create_table(
        "model_versions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("account_id", sa.Integer(), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
        _fk("detector_id", "detectors.id"),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("trainer", sa.String(40), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("training_set_size", sa.Integer(), nullable=False),
        sa.Column("class_counts", sa.JSON(), nullable=False),
        sa.Column("dataset_image_query_ids", sa.JSON(), nullable=True),
        sa.Column("decision", sa.JSON(), nullable=True),
        sa.Column("training_job_id", sa.String(64), nullable=True),
        sa.Column("primary_blob_key", sa.String(300), nullable=False),
        sa.Column("primary_sha256", sa.String(64), nullable=False),
        sa.Column("primary_pipeline_config", sa.JSON(), nullable=False),
        sa.Column("primary_metadata", sa.JSON(), nullable=False),
        sa.Column("oodd_blob_key", sa.String(300), nullable=True),
        sa.Column("oodd_sha256", sa.String(64), nullable=True),
        sa.Column("oodd_pipeline_config", sa.JSON(), nullable=True),
        sa.Column("oodd_metadata", sa.JSON(), nullable=True),
        sa.Column("activated_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("uq_model_versions_detector_version", "model_versions", ["detector_id", "version"], unique=True)
    op.create_table(
        "edges",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("account_id", sa.Integer(), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("software_version", sa.String(50), nullable=False),
        sa.Column("detector_ids", sa.JSON(), nullable=False),
        sa.Column("detectors", sa.JSON(), nullable=False),
        sa.Column("counters", sa.JSON(), nullable=True),
        sa.Column("last_seen", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_edges_account_id", "edges", ["account_id"])
    op.create_table(
        "edge_hourly_metrics",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("account_id", sa.Integer(), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
        _fk("edge_id", "edges.id"),
        sa.Column("detector_id", sa.String(64), nullable=False),
        sa.Column("hour", sa.DateTime(), nullable=False),
        sa.Column("counters", sa.JSON(), nullable=False),
    )
    op.create_index("uq_edge_hourly", "edge_hourly_metrics", ["edge_id", "detector_id", "hour"], unique=True)
    op.create_table(
        "training_jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("account_id", sa.Integer(), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
        _fk("detector_id", "detectors.id"),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("trigger", sa.String(10), nullable=False),
        sa.Column("trainer", sa.String(20), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("eta_s", sa.Float(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("epochs", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("model_version", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.String(64), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_training_jobs_detector_id", "training_jobs", ["detector_id"])
    op.create_index("ix_training_jobs_account_status", "training_jobs", ["account_id", "status"])
    op.create_table(
        "queue_messages",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("topic", sa.String(100), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("available_at", sa.DateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_queue_messages_topic_available", "queue_messages", ["topic", "available_at"])


def downgrade() -> None:
    for table in (
        "queue_messages",
        "training_jobs",
        "edge_hourly_metrics",
        "edges",
        "model_versions",
        "review_items",
        "labels",
        "image_queries",
        "detectors",
        "detector_groups",
        "api_tokens",
        "users",
        "accounts",
    ):
        op.drop_table(table)
