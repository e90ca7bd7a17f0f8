"""The object store (any S3 API: SeaweedFS embedded, MinIO or AWS in production).

Why a wrapper: every writer in feedloop needs the same few guarantees — conditional puts
(If-None-Match for immutable objects, If-Match for compare-and-swap pointers), listing by
prefix, and one clear error when the endpoint or a bucket is wrong.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from typing import Iterator
from urllib.parse import urlparse

import orjson

from feedloop.config import S3Settings, Settings

# Placeholder keys for a local endpoint with no credentials configured (SeaweedFS accepts any).
_LOCAL_KEYS = ("feedloop", "feedloop")


class PreconditionFailed(RuntimeError):
    """A conditional put lost: the object exists (If-None-Match) or changed (If-Match)."""


@dataclass(frozen=True)
class StoredObject:
    body: bytes
    etag: str


NOT_MODIFIED = StoredObject(b"", "")  # get_if_changed: the object still has the ETag given


class ObjectStore:
    """boto3 S3 client built from feedloop settings; credentials from env or the AWS chain."""

    def __init__(self, s3: S3Settings, *, access_key: str | None = None, secret_key: str | None = None):
        self.settings = s3
        self._keys = (access_key, secret_key)

    @classmethod
    def from_settings(cls, settings: Settings) -> ObjectStore:
        return cls(settings.s3)

    @cached_property
    def client(self):
        import boto3
        from botocore.config import Config

        access, secret = self._keys
        if access is None and not os.environ.get("AWS_ACCESS_KEY_ID") and _is_local(self.settings.endpoint_url):
            access, secret = _LOCAL_KEYS
        return boto3.client(
            "s3",
            endpoint_url=self.settings.endpoint_url or None,
            region_name=self.settings.region,
            aws_access_key_id=access,
            aws_secret_access_key=secret,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 5, "mode": "standard"},
                connect_timeout=5,
                read_timeout=60,
            ),
        )

    def ensure_bucket(self, bucket: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=bucket)
        except ClientError:
            self.client.create_bucket(Bucket=bucket)

    def put(self, bucket: str, key: str, body: bytes, *, if_none_match: bool = False, if_match: str | None = None,
            content_type: str = "application/octet-stream") -> str:
        """Write an object; returns its ETag. Raises PreconditionFailed if a condition loses."""
        from botocore.exceptions import ClientError

        kwargs: dict = {"Bucket": bucket, "Key": key, "Body": body, "ContentType": content_type}
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        try:
            return self.client.put_object(**kwargs)["ETag"]
        except ClientError as exc:
            if _status(exc) in (409, 412) or _code(exc) in ("PreconditionFailed", "ConditionalRequestConflict"):
                condition = "If-None-Match: *" if if_none_match else f"If-Match: {if_match}"
                raise PreconditionFailed(f"s3://{bucket}/{key}: conditional put ({condition}) lost") from None
            raise

    def get(self, bucket: str, key: str) -> StoredObject | None:
        """The object's bytes and ETag, or None if it does not exist."""
        from botocore.exceptions import ClientError

        try:
            resp = self.client.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404") or _status(exc) == 404:
                return None
            raise
        return StoredObject(resp["Body"].read(), resp["ETag"])

    def get_if_changed(self, bucket: str, key: str, etag: str | None) -> StoredObject | None:
        """One conditional GET (If-None-Match: etag): the object if it changed, NOT_MODIFIED if not, None if absent.

        Why: pollers (the serving pods) pay one cheap request per interval and never a LIST.
        """
        from botocore.exceptions import ClientError

        kwargs = {"Bucket": bucket, "Key": key, **({"IfNoneMatch": etag} if etag else {})}
        try:
            resp = self.client.get_object(**kwargs)
        except ClientError as exc:
            if _status(exc) == 304 or _code(exc) in ("304", "NotModified"):
                return NOT_MODIFIED
            if _code(exc) in ("NoSuchKey", "404") or _status(exc) == 404:
                return None
            raise
        return StoredObject(resp["Body"].read(), resp["ETag"])

    def put_json(self, bucket: str, key: str, obj: object, **conditions) -> str:
        body = orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
        return self.put(bucket, key, body, content_type="application/json", **conditions)

    def get_json(self, bucket: str, key: str) -> object | None:
        found = self.get(bucket, key)
        return None if found is None else orjson.loads(found.body)

    def list_keys(self, bucket: str, prefix: str = "") -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield item["Key"]

    def delete(self, bucket: str, key: str) -> None:
        self.client.delete_object(Bucket=bucket, Key=key)

    def uri(self, bucket: str, key: str) -> str:
        return f"s3://{bucket}/{key}"


def _is_local(endpoint: str) -> bool:
    return bool(endpoint) and urlparse(endpoint).hostname in ("127.0.0.1", "localhost", "::1")


def _code(exc) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
