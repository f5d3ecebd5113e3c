"""Migrations: they build exactly the ORM schema, on SQLite and PostgreSQL, and several
replicas migrating at once do not trip over each other. Also the first-start bootstrap."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from intellioptics_cloud.db import alembic_config, make_engine, run_migrations
from intellioptics_cloud.models import Base
from intellioptics_cloud.settings import CloudSettings


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata)
        version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    engine.dispose()
    assert diff == []
    assert version == "0004"


def test_downgrade_and_upgrade_round_trip(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'rt.db'}"
    engine = make_engine(url)
    run_migrations(engine)
    command.downgrade(alembic_config(url), "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    run_migrations(engine)
    assert "image_queries" in inspect(engine).get_table_names()
    engine.dispose()


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_replicas_migrating_together(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if backend == "postgres":
        pg = request.getfixturevalue("pg")
        url = pg.create_database(f"m_{uuid.uuid4().hex[:10]}")
    else:
        url = f"sqlite:///{tmp_path / 'replicas.db'}"
    env = {"INTELLIOPTICS_DATABASE_URL": url, "INTELLIOPTICS_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "intellioptics_cloud", "migrate"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120)[0].decode() for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], outputs
    engine = create_engine(url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == ["0004"]
    engine.dispose()


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.integration])]
)
def test_detectors_without_a_retrain_setting_keep_the_default(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Null used to mean the default of 10 and now means off: 0002 writes the 10 they ran with."""
    if backend == "postgres":
        url = request.getfixturevalue("pg").create_database(f"m_{uuid.uuid4().hex[:10]}")
    else:
        url = f"sqlite:///{tmp_path / 'retrain.db'}"
    command.upgrade(alembic_config(url), "0001")
    engine = create_engine(url)
    now = datetime(2026, 1, 1)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO accounts (id, name, created_at) VALUES (1, 'a', :now)"), {"now": now})
        for detector_id, every in (("det_unset", None), ("det_three", 3)):
            connection.execute(
                text(
                    "INSERT INTO detectors (id, account_id, name, query, group_name, confidence_threshold,"
                    " patience_time, mode, status, escalation_type, retrain_every_n_labels, promotion_policy,"
                    " created_at) VALUES (:id, 1, :id, 'q?', 'Default', 0.9, 30, 'BINARY', 'ON', 'STANDARD',"
                    " :every, 'auto', :now)"
                ),
                {"id": detector_id, "every": every, "now": now},
            )
    command.upgrade(alembic_config(url), "head")
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, retrain_every_n_labels FROM detectors ORDER BY id")).all()
    engine.dispose()
    assert [tuple(row) for row in rows] == [("det_three", 3), ("det_unset", 10)]


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.integration])]
)
def test_queries_stored_before_depth_have_none_and_the_column_goes_on_downgrade(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """0003 adds ``image_queries.depth_blob_key``: null (no depth) for the queries already stored."""
    if backend == "postgres":
        url = request.getfixturevalue("pg").create_database(f"m_{uuid.uuid4().hex[:10]}")
    else:
        url = f"sqlite:///{tmp_path / 'depth.db'}"
    command.upgrade(alembic_config(url), "0002")
    engine = create_engine(url)
    now = datetime(2026, 1, 1)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO accounts (id, name, created_at) VALUES (1, 'a', :now)"), {"now": now})
        connection.execute(
            text(
                "INSERT INTO detectors (id, account_id, name, query, group_name, confidence_threshold,"
                " patience_time, mode, status, escalation_type, retrain_every_n_labels, promotion_policy,"
                " created_at) VALUES ('det_a', 1, 'a', 'q?', 'Default', 0.9, 30, 'BINARY', 'ON', 'STANDARD',"
                " 10, 'auto', :now)"
            ),
            {"now": now},
        )
        connection.execute(
            text(
                "INSERT INTO image_queries (id, account_id, detector_id, created_at, query, result_type,"
                " confidence_threshold, patience_time, done_processing, human_review, image_blob_key,"
                " image_sha256, image_content_type, from_edge) VALUES ('iq_old', 1, 'det_a', :now, 'q?',"
                " 'binary_classification', 0.9, 30, false, 'DEFAULT', 'images/x', 'ab', 'image/png', false)"
            ),
            {"now": now},
        )
    command.upgrade(alembic_config(url), "head")
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT id, depth_blob_key FROM image_queries")).all()
    assert [tuple(row) for row in stored] == [("iq_old", None)]
    command.downgrade(alembic_config(url), "0002")
    columns = {column["name"] for column in inspect(engine).get_columns("image_queries")}
    engine.dispose()
    assert "depth_blob_key" not in columns and "image_blob_key" in columns


def test_first_start_generates_and_prints_a_token_once(tmp_path: Path, capsys, make_api) -> None:
    settings = CloudSettings(data_dir=tmp_path / "data", environment="test")
    first = make_api(settings)
    printed = re.search(r"admin token \(shown once\): (\S+)", capsys.readouterr().out)
    assert printed is not None
    token = printed.group(1)
    assert first.as_token(token).get("/v1/me").json()["role"] == "admin"
    make_api(settings)  # a restart: nothing new, nothing printed
    assert "shown once" not in capsys.readouterr().out
    assert (tmp_path / "data" / "cloud" / "cloud.db").is_file()
