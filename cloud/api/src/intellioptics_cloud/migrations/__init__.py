"""Alembic migrations, shipped inside the package (script location ``intellioptics_cloud:migrations``)."""
