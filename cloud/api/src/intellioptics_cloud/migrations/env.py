"""Alembic environment: runs on the connection the caller passes in ``config.attributes``
(so the migration runner can hold its advisory lock on that same connection), or on
``sqlalchemy.url`` when run from the ``alembic`` command line."""

from __future__ import annotations

from alembic import context

from intellioptics_cloud.db import make_engine
from intellioptics_cloud.models import Base
from intellioptics_cloud.settings import get_settings

target_metadata = Base.metadata


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.config.get_main_option("sqlalchemy.url") or get_settings().resolved_database_url
    engine = make_engine(url)  # also creates the SQLite file's directory
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()
