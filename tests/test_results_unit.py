"""The folder result store: atomic writes, reads, and deletion of expired results."""

from __future__ import annotations

import os
import time

from openpik.results import FileResultStore
from openpik.routing import result_name


def test_put_get_and_expiry(tmp_path):
    store = FileResultStore(tmp_path)
    store.put(result_name("a" * 20, 0), b"old")
    store.put(result_name("b" * 20, 0), b"new")
    assert store.get(result_name("a" * 20, 0)) == b"old" and store.get(result_name("c" * 20, 0)) is None
    assert not list(tmp_path.glob("*/*.partial"))
    two_days_ago = time.time() - 2 * 86400
    os.utime(tmp_path / ("a" * 20) / "0.png", (two_days_ago, two_days_ago))
    assert store.delete_older_than(86400) == 1
    assert store.get(result_name("a" * 20, 0)) is None and not (tmp_path / ("a" * 20)).exists()
    assert store.get(result_name("b" * 20, 0)) == b"new"
