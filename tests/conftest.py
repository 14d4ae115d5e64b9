"""Shared fixtures: one embedded S3 server (SeaweedFS) per test session, started only when used."""

from __future__ import annotations

import secrets

import pytest

from dfa_ray.ops.objectstore import EmbeddedS3


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A running EmbeddedS3 with credentials enforced; stopped at the end of the session."""
    server = EmbeddedS3(
        tmp_path_factory.mktemp("s3") / "data",
        bucket="dfa-test",
        access_key="test" + secrets.token_hex(6),
        secret_key="sk-" + secrets.token_urlsafe(24),
    )
    with server:
        yield server


@pytest.fixture
def s3(s3_server, monkeypatch):
    """The session's EmbeddedS3, with its AWS_* client variables set for this test only."""
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(key, raising=False)
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server


@pytest.fixture
def s3_prefix(s3, request):
    """A fresh ``s3://bucket/<test name>-<random>`` prefix on the session's server."""
    name = request.node.name.replace("[", "-").replace("]", "").replace("/", "-")
    return s3.uri(f"{name}-{secrets.token_hex(4)}")
