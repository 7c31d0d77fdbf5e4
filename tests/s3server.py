"""A real S3 API for tests: moto's server (``moto[server]``, >= 5.2.2) on 127.0.0.1 at a free
port, started and stopped by the test session. Nothing here touches ``os.environ``: :func:`s3_env`
gives the variables a test sets (through monkeypatch) to point AWS clients, pyarrow included, at it.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass

# Fake credentials and region: moto accepts any. The config-file variables keep a developer's
# own ~/.aws settings out of the tests.
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
}
UNSET = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3")


@dataclass
class S3Server:
    """A running moto server and the bucket created on it."""

    server: object
    host: str
    port: int
    bucket: str

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def uri(self, prefix: str = "", query: bool = False) -> str:
        """``s3://bucket/prefix`` (a fresh prefix if none), with pyarrow's endpoint query if asked."""
        path = f"s3://{self.bucket}/{prefix or uuid.uuid4().hex[:12]}"
        return f"{path}?endpoint_override={self.host}:{self.port}&scheme=http" if query else path

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=FAKE_AWS["AWS_DEFAULT_REGION"],
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def stop(self) -> None:
        self.server.stop()


def start_s3_server(bucket: str = "fixmatch-test") -> S3Server:
    """Start moto's S3 on 127.0.0.1 (port 0: the OS picks a free one) and create ``bucket``."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    s3 = S3Server(server, host, port, bucket)
    s3.client().create_bucket(Bucket=bucket)
    return s3


def s3_env(server: S3Server, endpoint: bool = True) -> tuple[dict[str, str], tuple[str, ...]]:
    """(variables to set, variables to unset) for clients of ``server``; ``endpoint=False`` leaves
    AWS_ENDPOINT_URL unset (URIs then carry ``endpoint_override``)."""
    env = dict(FAKE_AWS)
    if endpoint:
        env["AWS_ENDPOINT_URL"] = server.endpoint
    return env, UNSET + (() if endpoint else ("AWS_ENDPOINT_URL",))
