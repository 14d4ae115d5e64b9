"""EmbeddedS3: loopback-only SeaweedFS with enforced credentials, bounded start, clean stop, CLI."""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from dfa_ray import storage
from dfa_ray.ops.objectstore import EmbeddedS3, weed_binary


def _error_code(call) -> str:
    with pytest.raises(ClientError) as info:
        call()
    return info.value.response["Error"]["Code"]


def test_server_listens_on_loopback_with_a_private_identities_file(s3_server):
    assert s3_server.running and s3_server.endpoint_url.startswith("http://127.0.0.1:")
    assert stat.S_IMODE(s3_server.config_path.stat().st_mode) == 0o600
    env = s3_server.env()
    assert (
        env["AWS_ENDPOINT_URL_S3"] == s3_server.endpoint_url
        and env["AWS_ACCESS_KEY_ID"] == s3_server.access_key
    )
    assert weed_binary().is_file()


def test_right_credentials_work(s3_server):
    client = storage.s3_client(s3_server.settings)
    client.put_object(Bucket=s3_server.bucket, Key="auth/ok", Body=b"1")
    assert client.get_object(Bucket=s3_server.bucket, Key="auth/ok")["Body"].read() == b"1"


def test_wrong_secret_and_unknown_key_are_refused(s3_server):
    wrong_secret = dataclasses.replace(s3_server.settings, secret_key="not-the-secret", max_attempts=1)
    client = storage.s3_client(wrong_secret)
    assert _error_code(lambda: client.put_object(Bucket=s3_server.bucket, Key="x", Body=b"1")) == (
        "SignatureDoesNotMatch"
    )
    unknown = dataclasses.replace(
        s3_server.settings, access_key="nobody", secret_key="whatever", max_attempts=1
    )
    client = storage.s3_client(unknown)
    assert _error_code(lambda: client.list_objects_v2(Bucket=s3_server.bucket)) == "InvalidAccessKeyId"


def test_anonymous_requests_are_refused(s3_server):
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        region_name="us-east-1",
        config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}),
    )
    assert _error_code(lambda: client.list_objects_v2(Bucket=s3_server.bucket)) in ("AccessDenied", "403")
    assert _error_code(lambda: client.put_object(Bucket=s3_server.bucket, Key="anon", Body=b"1")) in (
        "AccessDenied",
        "403",
    )


def test_secret_stays_out_of_repr_logs_cmdline_and_errors(s3_server, s3_prefix, monkeypatch, caplog):
    secret = s3_server.env()["AWS_SECRET_ACCESS_KEY"]
    texts = [repr(s3_server), str(s3_server.settings), s3_server.log_path.read_text(errors="replace")]
    pid = s3_server._process.pid
    texts.append(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"))
    texts.append(Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace"))
    caplog.set_level(logging.DEBUG)
    for call in (
        lambda: storage.read_bytes(storage.join(s3_prefix, "missing")),
        lambda: storage.read_bytes("s3://no-such-bucket-here/key"),
    ):
        with pytest.raises(storage.StorageError) as info:
            call()
        texts += [str(info.value), repr(info.value)]
    texts.append(caplog.text)
    assert texts and not [text for text in texts if secret in text]


def test_start_gives_up_after_the_timeout_with_a_clear_error(tmp_path, monkeypatch):
    fake = tmp_path / "weed"
    fake.write_text("#!/bin/sh\necho pretending to start\nexec sleep 30\n")
    fake.chmod(0o755)
    monkeypatch.setenv("DFA_WEED_BIN", str(fake))
    server = EmbeddedS3(tmp_path / "data", start_timeout=1.5, access_key="k", secret_key="very-secret-value")
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="did not accept a PUT within 2 s") as info:
        server.start()
    assert time.monotonic() - started < 10 and not server.running and not server.config_path.exists()
    assert "pretending to start" in str(info.value) and "very-secret-value" not in str(info.value)


def test_start_reports_an_early_exit(tmp_path, monkeypatch):
    fake = tmp_path / "weed"
    fake.write_text("#!/bin/sh\necho 'fatal: disk on fire' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("DFA_WEED_BIN", str(fake))
    with pytest.raises(RuntimeError, match="(?s)exited with code 3.*disk on fire"):
        EmbeddedS3(tmp_path / "data", start_timeout=10).start()


def test_invalid_bucket_name_is_refused(tmp_path):
    with pytest.raises(ValueError, match="'x'"):
        EmbeddedS3(tmp_path, bucket="x")


def _nothing_listens(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_stop_is_clean_and_a_restart_keeps_data_but_takes_new_credentials(tmp_path):
    first = EmbeddedS3(tmp_path / "data", bucket="restart-test", access_key="k1", secret_key="first-secret")
    with first:
        storage.s3_client(first.settings).put_object(Bucket="restart-test", Key="kept", Body=b"data")
        process, port = first._process, first.port
    assert process.poll() is not None and not first.running
    assert not first.config_path.exists() and _nothing_listens(port)
    first.stop()  # idempotent

    with EmbeddedS3(
        tmp_path / "data", bucket="restart-test", access_key="k2", secret_key="second-secret"
    ) as second:
        body = storage.s3_client(second.settings).get_object(Bucket="restart-test", Key="kept")["Body"].read()
        assert body == b"data"
        old = dataclasses.replace(second.settings, access_key="k1", secret_key="first-secret", max_attempts=1)
        assert _error_code(lambda: storage.s3_client(old).list_objects_v2(Bucket="restart-test"))


def test_cli_prints_the_endpoint_not_the_secret_and_stops_on_sigterm(tmp_path):
    secret = "cli-secret-" + "z" * 16
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID="cli-key", AWS_SECRET_ACCESS_KEY=secret)
    env_file = tmp_path / "client.env"
    command = [
        sys.executable,
        "-m",
        "dfa_ray.ops.objectstore",
        "--dir",
        str(tmp_path / "d"),
        "--bucket",
        "cli-bucket",
    ]
    process = subprocess.Popen(
        [*command, "--env-file", str(env_file)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(line.startswith("client env:") for line in lines):
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
        endpoint = next(line.split()[-1] for line in lines if line.startswith("S3 endpoint:"))
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        client_env = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        assert client_env["AWS_ENDPOINT_URL_S3"] == endpoint and client_env["AWS_SECRET_ACCESS_KEY"] == secret
        settings = storage.S3Settings.from_env(client_env)
        storage.s3_client(settings).put_object(Bucket="cli-bucket", Key="k", Body=b"v")
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    lines.append(output)
    assert process.returncode == 0
    assert secret not in "".join(lines) and "stopping" in output
    assert not (tmp_path / "d" / "s3-identities.json").exists()
