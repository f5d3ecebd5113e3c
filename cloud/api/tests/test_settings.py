"""The cloud API's settings refuse placeholder secrets in production, the database
password included."""

from __future__ import annotations

import pytest

from intellioptics_cloud.settings import CloudSettings

REAL_SECRET = "a-real-secret-value"


def test_placeholder_secret_is_refused_in_production() -> None:
    with pytest.raises(ValueError, match="SECRET_KEY"):
        CloudSettings(environment="production")
    with pytest.raises(ValueError, match="BOOTSTRAP_TOKEN"):
        CloudSettings(bootstrap_token="short")
    assert CloudSettings(environment="production", secret_key=REAL_SECRET).secret_key


@pytest.mark.parametrize("password", ["change-me", "postgres", "password", "PASSWORD", "", "changeme"])
def test_placeholder_database_password_is_refused_in_production(password: str) -> None:
    url = f"postgresql+psycopg2://intellioptics:{password}@postgres:5432/intellioptics"
    with pytest.raises(ValueError, match="DATABASE_URL has a placeholder password"):
        CloudSettings(environment="production", secret_key=REAL_SECRET, database_url=url)
    # Development and test keep working with the well-known passwords of local databases.
    assert CloudSettings(environment="test", database_url=url).database_url == url


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg2://intellioptics:9f2c41d7e0ab38c5@postgres:5432/intellioptics",
        "postgresql+psycopg2://intellioptics:pass%40word@db/io",  # 'pass@word' is not 'password'
        "postgresql+psycopg2://intellioptics@db/io",  # no password in the URL (peer or IAM auth)
        "sqlite:////var/lib/intellioptics/cloud.db",
        None,
    ],
)
def test_real_or_no_database_password_is_accepted_in_production(url: str | None) -> None:
    settings = CloudSettings(environment="production", secret_key=REAL_SECRET, database_url=url)
    assert settings.database_url == url


def test_unparseable_database_url_is_refused_in_production() -> None:
    with pytest.raises(ValueError, match="not a SQLAlchemy database URL"):
        CloudSettings(environment="production", secret_key=REAL_SECRET, database_url="postgres at db")
