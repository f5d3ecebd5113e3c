"""Launchers for the real processes the tests start: PostgreSQL, nginx, Azurite, our services."""
