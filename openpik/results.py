"""Where result images live: a folder (a shared volume in a cluster) or S3-compatible storage.

Workers write, the gateway serves (GET /results/{TaskUID}/{n}.png), both through this one
interface and the names of openpik.routing, so a client's URL works whichever store the
operator chose. Results older than OPENPIK_RESULT_TTL_S are deleted.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from openpik.settings import Settings


class ResultStore(ABC):
    @abstractmethod
    def put(self, name: str, data: bytes) -> None: ...

    @abstractmethod
    def get(self, name: str) -> bytes | None: ...

    @abstractmethod
    def delete_older_than(self, age_s: float) -> int:
        """Delete results older than ``age_s``; returns how many."""


class FileResultStore(ResultStore):
    def __init__(self, root: Path):
        self.root = Path(root)

    def put(self, name: str, data: bytes) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_bytes(data)
        partial.replace(path)  # readers never see half a file

    def get(self, name: str) -> bytes | None:
        path = self.root / name
        return path.read_bytes() if path.is_file() else None

    def delete_older_than(self, age_s: float) -> int:
        cutoff = time.time() - age_s
        deleted = 0
        for path in self.root.glob("*/*.png"):
            if path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                deleted += 1
        for folder in self.root.glob("*"):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        return deleted


class S3ResultStore(ResultStore):
    def __init__(self, bucket: str, prefix: str = "", **client_options: Any):
        import boto3

        self.bucket = bucket
        self.prefix = prefix
        self.client = boto3.client("s3", **client_options)

    def put(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.prefix + name, Body=data, ContentType="image/png")

    def get(self, name: str) -> bytes | None:
        try:
            data: bytes = self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)["Body"].read()
            return data
        except self.client.exceptions.NoSuchKey:
            return None

    def delete_older_than(self, age_s: float) -> int:
        cutoff = time.time() - age_s
        old = [
            {"Key": item["Key"]}
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
            for item in page.get("Contents", [])
            if item["LastModified"].timestamp() < cutoff
        ]
        for start in range(0, len(old), 1000):
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": old[start : start + 1000]})
        return len(old)


def result_store_from_settings(settings: Settings) -> ResultStore:
    if settings.result_store == "s3":
        return S3ResultStore(
            settings.s3_bucket,
            settings.s3_prefix,
            endpoint_url=settings.s3_endpoint_url,
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=settings.s3_secret_access_key,
            region_name=settings.s3_region,
        )
    return FileResultStore(settings.results_dir)
