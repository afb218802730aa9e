"""The result stores (folder and S3), the sweeper that deletes expired results, and result URLs.

No process and no models: the folder store on a temporary folder, the S3 store against moto's
in-process S3, and the URL rules as pure functions.
"""

from __future__ import annotations

import logging
import os
import time

import boto3
import pytest
import redis
from botocore.config import Config
from moto import mock_aws

from api.queries.serving import legacy_detail, task_detail
from openpik.results import FileResultStore, ResultSweeper, S3ResultStore, lifecycle_rule
from openpik.routing import result_name, result_url
from openpik.task_records import TaskRecord, TaskStore
from openpik.vocabulary import TaskStatus
from tests.stack import wait_for

OLD = time.time() - 2 * 86400
S3_OPTIONS = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}


def make_old(path) -> None:
    os.utime(path, (OLD, OLD))


def test_put_get_and_expiry(tmp_path):
    store = FileResultStore(tmp_path)
    store.put(result_name("a" * 20, 0), b"old")
    store.put(result_name("b" * 20, 0), b"new")
    assert store.get(result_name("a" * 20, 0)) == b"old" and store.get(result_name("c" * 20, 0)) is None
    assert not list(tmp_path.glob("*/*.partial"))
    make_old(tmp_path / ("a" * 20) / "0.png")
    assert store.delete_older_than(86400) == 1  # and the folder it emptied, though deleting just touched it
    assert store.get(result_name("a" * 20, 0)) is None and not (tmp_path / ("a" * 20)).exists()
    assert store.get(result_name("b" * 20, 0)) == b"new"
    assert store.delete_older_than(86400) == 0  # a second sweeper finds nothing left, and no error


def test_a_young_empty_task_folder_is_kept_for_the_worker_about_to_write_into_it(tmp_path):
    store = FileResultStore(tmp_path)
    (tmp_path / ("y" * 20)).mkdir()
    (tmp_path / ("o" * 20)).mkdir()
    make_old(tmp_path / ("o" * 20))
    store.delete_older_than(3600)
    assert (tmp_path / ("y" * 20)).is_dir() and not (tmp_path / ("o" * 20)).exists()


def test_the_sweeper_deletes_expired_results_on_its_own_schedule(tmp_path):
    store = FileResultStore(tmp_path)
    store.put(result_name("a" * 20, 0), b"x")
    sweeper = ResultSweeper(store, ttl_s=3600, interval_s=0.05).start()
    try:
        time.sleep(0.2)
        assert store.get(result_name("a" * 20, 0)) == b"x"  # young: kept through several sweeps
        make_old(tmp_path / ("a" * 20) / "0.png")
        wait_for(lambda: store.get(result_name("a" * 20, 0)) is None, 5, message="the next sweep")
    finally:
        sweeper.stop()
    assert not sweeper.running


def test_a_failing_sweep_is_logged_and_the_next_one_still_runs(caplog):
    unreachable = S3ResultStore(
        "results",
        endpoint_url="http://127.0.0.1:1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
        **S3_OPTIONS,
    )

    def failed_sweeps() -> int:
        return sum(r.message.startswith("deleting expired results failed") for r in caplog.records)

    with caplog.at_level(logging.WARNING, logger="openpik.results"):
        sweeper = ResultSweeper(unreachable, ttl_s=3600, interval_s=0.05).start()
        try:
            wait_for(lambda: failed_sweeps() >= 2, 30, message="two failed sweeps")
            assert sweeper.running
        finally:
            sweeper.stop()
    assert any(r.message.startswith("could not set the lifecycle rule on bucket results") for r in caplog.records)


@mock_aws
def test_the_s3_store_sets_its_lifecycle_rule_once_and_keeps_the_operators_rules():
    client = boto3.client("s3", **S3_OPTIONS)
    client.create_bucket(Bucket="results")
    theirs = {"ID": "logs", "Filter": {"Prefix": "logs/"}, "Status": "Enabled", "Expiration": {"Days": 30}}
    client.put_bucket_lifecycle_configuration(Bucket="results", LifecycleConfiguration={"Rules": [theirs]})
    store = S3ResultStore("results", "openpik/", **S3_OPTIONS)

    store.expire_after(25 * 3600)  # 25 hours: S3 counts whole days, so 2
    rules = client.get_bucket_lifecycle_configuration(Bucket="results")["Rules"]
    assert [r["ID"] for r in rules] == ["logs", "openpik-result-expiry"]
    ours = rules[1]
    assert ours["Expiration"] == {"Days": 2} and ours["Filter"] == {"Prefix": "openpik/"}
    assert ours["Status"] == "Enabled"

    store.expire_after(25 * 3600)  # idempotent
    store.expire_after(3600)  # a shorter TTL replaces our rule: at least one day
    rules = client.get_bucket_lifecycle_configuration(Bucket="results")["Rules"]
    assert [(r["ID"], r["Expiration"]["Days"]) for r in rules] == [("logs", 30), ("openpik-result-expiry", 1)]


@mock_aws
def test_a_bucket_without_a_lifecycle_configuration_gets_ours_and_a_refusal_is_only_logged(caplog):
    client = boto3.client("s3", **S3_OPTIONS)
    client.create_bucket(Bucket="results")
    S3ResultStore("results", **S3_OPTIONS).expire_after(86400)
    (rule,) = client.get_bucket_lifecycle_configuration(Bucket="results")["Rules"]
    assert rule["Expiration"] == {"Days": 1} and rule["Filter"] == {"Prefix": ""}
    with caplog.at_level(logging.WARNING, logger="openpik.results"):
        S3ResultStore("no-such-bucket", **S3_OPTIONS).expire_after(86400)
    assert "could not set the lifecycle rule on bucket no-such-bucket" in caplog.text


@mock_aws
def test_the_s3_store_puts_gets_and_deletes_older_than_under_its_prefix():
    client = boto3.client("s3", **S3_OPTIONS)
    client.create_bucket(Bucket="results")
    client.put_object(Bucket="results", Key="elsewhere/0.png", Body=b"theirs")
    store = S3ResultStore("results", "openpik/", **S3_OPTIONS)
    store.put(result_name("a" * 20, 0), b"png")
    assert store.get(result_name("a" * 20, 0)) == b"png" and store.get(result_name("b" * 20, 0)) is None
    assert store.delete_older_than(3600) == 0
    assert store.delete_older_than(-60) == 1  # everything under the prefix is "older" than a minute ahead
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="results")["Contents"]]
    assert keys == ["elsewhere/0.png"]


@pytest.mark.parametrize(
    ("ttl_s", "days"), [(60, 1), (86400, 1), (86401, 2), (7 * 86400, 7)], ids=["minute", "day", "day+1s", "week"]
)
def test_the_lifecycle_rule_rounds_the_ttl_up_to_whole_days(ttl_s, days):
    assert lifecycle_rule("p/", ttl_s)["Expiration"] == {"Days": days}


def test_result_urls_are_built_from_the_answering_gateways_public_url():
    name = result_name("t" * 20, 1)
    assert name == "tttttttttttttttttttt/1.png"
    assert result_url("https://img.example.com/pik/", name) == f"https://img.example.com/pik/results/{name}"
    assert result_url("https://img.example.com/pik", name) == f"https://img.example.com/pik/results/{name}"
    record = TaskRecord(
        task_id="t" * 20,
        owner="o",
        action="GenerateImages",
        queue="q",
        status=TaskStatus.FINISHED,
        results=[result_name("t" * 20, 0), name],
        seeds=[5, 6],
    )
    tasks = TaskStore(redis.Redis(), ttl_s=3600)  # a finished record needs no Redis call to describe
    expected = [f"http://gw-2:8000/results/{'t' * 20}/0.png", f"http://gw-2:8000/results/{name}"]
    assert task_detail(tasks, record, "http://gw-2:8000").ImgList == expected
    assert legacy_detail(tasks, record, "http://gw-2:8000/")["FinalPictureUrls"] == expected


def test_a_record_holds_result_names_and_reads_one_written_before_them_as_having_none():
    record = TaskRecord(task_id="t" * 20, owner="o", action="a", queue="q", results=["t" * 20 + "/0.png"])
    raw = record.to_hash()
    assert raw["results"] == '["tttttttttttttttttttt/0.png"]' and "urls" not in raw
    assert TaskRecord.from_hash(raw).results == record.results
    older = {k: v for k, v in raw.items() if k != "results"} | {"urls": '["http://old/results/t/0.png"]'}
    assert TaskRecord.from_hash(older).results == []
