"""S3 buckets asked before anything is written to them (``a2net server``'s artifacts, ``a2net push`` /
``pull``): an endpoint that does not answer, a wrong bucket or missing credentials is then one line
naming the URL and the endpoint (passwords masked), not a traceback, minutes of retries or, with
s3fs, a plain "does not exist". Credentials are whatever the client reads (the environment, a
profile, DVC's local config); they are never shown. MinIO and other S3-compatible stores are
reached through ``AWS_ENDPOINT_URL``, which boto3, s3fs, DVC and MLflow all honour."""

from __future__ import annotations

from urllib.parse import urlsplit

from pipeline.core.errors import masked

# quick answers for a check: a dead endpoint is reported in seconds, not after botocore's retries
CHECK_TIMEOUT_S = 5
# botocore's names for "nothing answered" (its ConnectionError family)
NO_ANSWER = {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError"}
NO_CREDENTIALS = {"NoCredentialsError", "PartialCredentialsError"}


def s3_bucket(url: str) -> str | None:
    """The bucket of an ``s3://bucket/prefix`` URL; None for a folder or another store's URL."""
    parts = urlsplit(url)
    return parts.hostname if parts.scheme == "s3" else None


def s3_problem(err: Exception, bucket: str, endpoint: str | None) -> str:
    """What ``err``, raised asking ``endpoint`` (None: AWS) for ``bucket``, means and what to do."""
    at = masked(endpoint or "AWS")
    name = type(err).__name__
    if name in NO_CREDENTIALS:
        return f"no credentials for {at}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
    if name in NO_ANSWER:
        return f"the endpoint {at} does not answer; start it or fix the endpoint URL (AWS_ENDPOINT_URL)"
    status = _http_status(err)
    if status == 404:
        return f"there is no bucket {bucket!r} at {at}; create it or fix the URL"
    if status == 403:
        return f"access to bucket {bucket!r} at {at} is denied; check the credentials"
    return f"{name} from {at}: {masked(str(err))}"


def _http_status(err: Exception) -> int | None:
    """The HTTP status behind ``err``: botocore's ClientError carries it, s3fs turns 404 and 403
    into FileNotFoundError and PermissionError."""
    if isinstance(err, FileNotFoundError):
        return 404
    if isinstance(err, PermissionError):
        return 403
    response = getattr(err, "response", None) or {}
    return response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def s3_errors() -> tuple[type[Exception], ...]:
    """The exceptions an S3 request raises (botocore's, and s3fs's OSErrors)."""
    from botocore.exceptions import BotoCoreError, ClientError

    return BotoCoreError, ClientError, OSError


def s3_bucket_problem(url: str, endpoint_url: str | None = None) -> str | None:
    """Why the bucket of ``url`` cannot be used with the environment's credentials and endpoint
    (``endpoint_url`` overrides it), in one line; None when it answers a HEAD request."""
    import boto3
    from botocore.config import Config

    bucket = s3_bucket(url)
    config = Config(connect_timeout=CHECK_TIMEOUT_S, read_timeout=CHECK_TIMEOUT_S, retries={"max_attempts": 1})
    # a new session: the environment as it is now (boto3's default session keeps what it first found)
    client = boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)
    try:
        client.head_bucket(Bucket=bucket)
    except s3_errors() as err:
        return s3_problem(err, bucket, client.meta.endpoint_url)
    return None
