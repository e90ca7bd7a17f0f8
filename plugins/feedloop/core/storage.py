"""The object store (any S3 API: SeaweedFS embedded, MinIO or AWS in production).

Why a wrapper: every writer in feedloop needs the same few guarantees — conditional puts
(If-None-Match for immutable objects, If-Match for compare-and-swap pointers), listing by
prefix, and one clear error when the endpoint or a bucket is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Iterator

import orjson

from feedloop.core.config import S3Settings, Settings
from feedloop.core.credentials import resolve_s3


class PreconditionFailed(RuntimeError):
    """A conditional put lost: the object exists (If-None-Match) or changed (If-Match)."""


@dataclass(frozen=True)
class StoredObject:
    body: bytes
    etag: str


NOT_MODIFIED = StoredObject(b"", "")  # get_if_changed: the object still has the ETag given


class ObjectStore:
    """boto3 S3 client built from feedloop settings; credentials and endpoint from feedloop.core.credentials."""

    def __init__(self, s3: S3Settings):
        self.settings = s3

    @classmethod
    def from_settings(cls, settings: Settings) -> ObjectStore:
        return cls(settings.s3)

    @cached_property
    def client(self):
        from botocore import UNSIGNED
        from botocore.config import Config

        creds = resolve_s3(self.settings)
        return creds.session.client(
            "s3",
            endpoint_url=creds.endpoint_url or None,
            region_name=creds.region,
            config=Config(
                **({"signature_version": UNSIGNED} if creds.anonymous else {}),
                s3={"addressing_style": "path"},
                retries={"max_attempts": 5, "mode": "standard"},
                connect_timeout=5,
                read_timeout=60,
            ),
        )

    @cached_property
    def arrow_filesystem(self):
        """The same store as pyarrow's S3 filesystem (C++: its requests run without the GIL), for whole-object reads
        and copies of many objects at once."""
        from pyarrow import fs  # lazy: loaded only by the steps that read the lake in bulk

        creds = resolve_s3(self.settings)
        endpoint = creds.endpoint_url
        return fs.S3FileSystem(
            access_key=creds.access_key, secret_key=creds.secret_key, session_token=creds.session_token,
            anonymous=creds.anonymous, region=creds.region,
            endpoint_override=endpoint.split("://", 1)[-1] if endpoint else None,
            scheme=endpoint.split("://", 1)[0] if endpoint else "https")

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
        """numpy scalars and arrays are written as numbers (GX results keep numpy values, e.g. a column max)."""
        body = orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
                            | orjson.OPT_SERIALIZE_NUMPY)
        return self.put(bucket, key, body, content_type="application/json", **conditions)

    def get_json(self, bucket: str, key: str) -> object | None:
        found = self.get(bucket, key)
        return None if found is None else orjson.loads(found.body)

    def list_keys(self, bucket: str, prefix: str = "") -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield item["Key"]

    def list_etags(self, bucket: str, prefix: str = "") -> Iterator[tuple[str, str]]:
        """(key, ETag) pairs from the listing itself: the same ETag a HEAD returns, without a request per key."""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield item["Key"], item["ETag"]

    def delete(self, bucket: str, key: str) -> None:
        self.client.delete_object(Bucket=bucket, Key=key)

    def uri(self, bucket: str, key: str) -> str:
        return f"s3://{bucket}/{key}"


def _code(exc) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
