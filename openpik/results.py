"""Where result images live: a folder (a shared volume in a cluster) or S3-compatible storage.

Workers write, the gateway serves (GET /results/{TaskUID}/{n}.png), both through this one
interface and the names of openpik.routing, so a client's URL works whichever store the
operator chose. Results older than OPENPIK_RESULT_TTL_S are deleted by the gateways'
ResultSweeper on its own schedule, whatever the workers are doing; an S3 bucket also gets a
lifecycle rule, so the backend deletes them even when no gateway runs.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from openpik.settings import Settings

log = logging.getLogger("openpik.results")

DAY_S = 24 * 3600
LIFECYCLE_RULE_ID = "openpik-result-expiry"
"""Our rule in the bucket's lifecycle configuration; rules of other ids are the operator's and kept."""


class ResultStore(ABC):
    @abstractmethod
    def put(self, name: str, data: bytes) -> None: ...

    @abstractmethod
    def get(self, name: str) -> bytes | None: ...

    @abstractmethod
    def delete_older_than(self, age_s: float) -> int:
        """Delete results older than ``age_s``; returns how many. Safe to run from several
        processes at once: what another sweeper deleted first is simply not counted."""

    def expire_after(self, ttl_s: int) -> None:
        """Ask the backend to delete results older than ``ttl_s`` by itself, where it can."""
        return None


class FileResultStore(ResultStore):
    """One folder per task under ``root``; a file's age is its modification time."""

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
        deleted = [path for path in self.root.glob("*/*.png") if _unlink_if_older(path, cutoff)]
        # Folders this sweep emptied, and old ones left empty; a young empty folder may be a
        # worker's, made a moment ago to write into.
        stale = {folder for folder in self.root.glob("*") if _mtime(folder) < cutoff}
        for folder in stale | {path.parent for path in deleted}:
            with contextlib.suppress(OSError):  # gone already, or not empty (any more)
                folder.rmdir()
        return len(deleted)


def _mtime(path: Path) -> float:
    """When ``path`` last changed; infinitely young once another sweeper deleted it."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return math.inf


def _unlink_if_older(path: Path, cutoff: float) -> bool:
    """Whether this call deleted ``path``; False when it is young or another sweeper got it first."""
    if _mtime(path) >= cutoff:
        return False
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


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

    def expire_after(self, ttl_s: int) -> None:
        """Our lifecycle rule: objects under the prefix expire ceil(TTL in days) after they were
        written (S3 counts whole days). Written only when missing or different, and the operator's
        other rules are kept; a backend without lifecycle support is logged, the sweep still runs."""
        rule = lifecycle_rule(self.prefix, ttl_s)
        try:
            rules = self._lifecycle_rules()
            if rule in rules:
                return
            others = [r for r in rules if r.get("ID") != LIFECYCLE_RULE_ID]
            self.client.put_bucket_lifecycle_configuration(
                Bucket=self.bucket, LifecycleConfiguration={"Rules": [*others, rule]}
            )
        except Exception as exc:  # any backend refusal: the sweep alone keeps the TTL
            log.warning(
                "could not set the lifecycle rule on bucket %s (%s); sweeps alone delete results", self.bucket, exc
            )

    def _lifecycle_rules(self) -> list[dict[str, Any]]:
        try:
            rules: list[dict[str, Any]] = self.client.get_bucket_lifecycle_configuration(Bucket=self.bucket)["Rules"]
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchLifecycleConfiguration":
                return []
            raise
        return rules


def lifecycle_rule(prefix: str, ttl_s: int) -> dict[str, Any]:
    """The bucket lifecycle rule that expires our results, as S3's API reads and returns it."""
    return {
        "ID": LIFECYCLE_RULE_ID,
        "Filter": {"Prefix": prefix},
        "Status": "Enabled",
        "Expiration": {"Days": max(1, math.ceil(ttl_s / DAY_S))},
    }


class ResultSweeper:
    """Deletes expired results every ``interval_s`` in a thread of its own, off the event loop.

    Every gateway process runs one (deleting is idempotent), so results go within
    ``interval_s`` of their expiry whether or not any worker is busy. A failed sweep is
    logged and the next one runs on schedule.
    """

    def __init__(self, store: ResultStore, ttl_s: int, interval_s: float):
        self.store = store
        self.ttl_s = ttl_s
        self.interval_s = interval_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="openpik-result-sweeper", daemon=True)

    def start(self) -> ResultSweeper:
        """Set the store's own expiry (where it has one), then sweep now and on schedule."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """No new sweep starts; a sweep in flight gets a few seconds (it is a daemon thread, and
        whatever it leaves undone the next sweep of any gateway does)."""
        self._stopped.set()
        self._thread.join(timeout=5)

    @property
    def running(self) -> bool:
        """Whether the sweeping thread is alive (a failed sweep never ends it; stop does)."""
        return self._thread.is_alive()

    def sweep(self) -> int:
        """One sweep; how many results it deleted (0 when it failed: logged)."""
        try:
            deleted = self.store.delete_older_than(self.ttl_s)
        except Exception:
            log.exception("deleting expired results failed; retrying in %g s", self.interval_s)
            return 0
        if deleted:
            log.info("deleted %d expired result images", deleted)
        return deleted

    def _run(self) -> None:
        self.store.expire_after(self.ttl_s)
        while not self._stopped.is_set():
            self.sweep()
            self._stopped.wait(self.interval_s)


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
