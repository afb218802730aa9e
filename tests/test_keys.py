"""Key stores (file and Redis) and the `openpik-keys` command line."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml

from api.errors import SignatureMismatch
from api.keys_cli import main as keys_cli
from api.signature import verify
from openpik.keys import (
    DuplicateKeyError,
    FileKeyStore,
    InvalidKeyError,
    KeyStoreError,
    RedisKeyStore,
    UnknownKeyError,
    key_store_from_settings,
)
from openpik.settings import Settings
from openpik.signing import sign
from tests.requests import txt2img
from tests.stack import RedisDb, open_redis, redis_url

REPO_ROOT = Path(__file__).resolve().parent.parent

# A pair shaped like PICPIK's: UCloud-style public key, 40 hex characters of private key.
PICPIK_PUBLIC = "someone@example.com1296235120854146120"
PICPIK_PRIVATE = "46f09bb9fab4f12dfc160dae12273d5332b5debe"

# Strings no client could sign with, and the character each is refused for.
BAD_KEY_TEXT = [
    ("", None),
    ("lead ing", "U+0020"),
    ("tab\t", "U+0009"),
    ("line\n", "U+000A"),
    ("nul\x00", "U+0000"),
    ("\ufeffbom", "U+FEFF"),
    ("zero\u200bwidth", "U+200B"),
    ("no\u00a0break", "U+00A0"),
    ("lone\udc80surrogate", "U+DC80"),
]


@pytest.fixture
def redis_prefix(keys_redis):
    """A prefix of our own, so cleanup never touches keys of other tests sharing the DB."""
    prefix = f"openpik-test-keys:{uuid.uuid4().hex}:"
    yield prefix
    for name in keys_redis.scan_iter(match=prefix + "*"):
        keys_redis.delete(name)


@pytest.fixture
def keys_file(tmp_path) -> Path:
    return tmp_path / "keys.yaml"


@pytest.fixture(params=["file", "redis"])
def make_store(request, keys_file):
    """A factory: calling it twice gives two stores over the same data, like two processes."""
    if request.param == "file":
        return lambda: FileKeyStore(keys_file)
    client = request.getfixturevalue("keys_redis")
    prefix = request.getfixturevalue("redis_prefix")
    return lambda: RedisKeyStore(client, prefix=prefix)


def test_create(make_store):
    store = make_store()
    key = store.create("alice")
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", key.public_key)
    assert re.fullmatch(r"[0-9a-f]{40}", key.private_key)
    assert key.name == "alice" and key.enabled
    assert store.private_key(key.public_key) == key.private_key
    assert store.list() == [key]


def test_keys_are_distinct(make_store):
    store = make_store()
    first, second = store.create("a"), store.create("b")
    assert first.public_key != second.public_key and first.private_key != second.private_key
    assert {k.public_key for k in store.list()} == {first.public_key, second.public_key}


def test_disable(make_store):
    store = make_store()
    key = store.create("alice")
    store.disable(key.public_key)
    assert store.private_key(key.public_key) is None
    assert store.list() == [key.model_copy(update={"enabled": False})]


def test_rotate_keeps_public_key(make_store):
    store = make_store()
    key = store.create("alice")
    rotated = store.rotate(key.public_key)
    assert rotated.public_key == key.public_key and rotated.name == "alice"
    assert re.fullmatch(r"[0-9a-f]{40}", rotated.private_key) and rotated.private_key != key.private_key
    assert store.private_key(key.public_key) == rotated.private_key


def test_rotating_a_disabled_key_keeps_it_disabled(make_store):
    store = make_store()
    key = store.create("alice")
    store.disable(key.public_key)
    assert not store.rotate(key.public_key).enabled
    assert store.private_key(key.public_key) is None


def test_unknown_key(make_store):
    store = make_store()
    assert store.private_key("nobody") is None
    assert store.get("nobody") is None
    with pytest.raises(UnknownKeyError, match="nobody"):
        store.disable("nobody")
    with pytest.raises(UnknownKeyError, match="nobody"):
        store.rotate("nobody")


def test_another_instance_sees_changes(make_store):
    reader, writer = make_store(), make_store()
    assert reader.list() == []
    key = writer.create("alice")
    assert reader.private_key(key.public_key) == key.private_key
    rotated = writer.rotate(key.public_key)
    assert reader.private_key(key.public_key) == rotated.private_key
    writer.disable(key.public_key)
    assert reader.private_key(key.public_key) is None


def test_import_keeps_the_pair(make_store):
    store = make_store()
    key = store.import_key(PICPIK_PUBLIC, PICPIK_PRIVATE, "picpik-customer")
    assert key.model_dump(exclude_none=True) == {
        "public_key": PICPIK_PUBLIC,
        "private_key": PICPIK_PRIVATE,
        "name": "picpik-customer",
        "enabled": True,
    }
    assert store.private_key(PICPIK_PUBLIC) == PICPIK_PRIVATE
    assert store.list() == [key]


@pytest.mark.parametrize("private_key", ["x", "not-hex:Schlüssel/+=", "a" * 200])
def test_import_accepts_any_printable_private_key(make_store, private_key):
    store = make_store()
    store.import_key(PICPIK_PUBLIC, private_key, "n")
    assert store.private_key(PICPIK_PUBLIC) == private_key


def test_import_refuses_an_existing_key_and_keeps_it(make_store):
    store = make_store()
    created = store.create("alice")
    with pytest.raises(DuplicateKeyError, match=f"public key already exists: {created.public_key}"):
        store.import_key(created.public_key, PICPIK_PRIVATE, "mallory")
    assert store.list() == [created]


def test_import_refuses_a_disabled_key_and_keeps_it_disabled(make_store):
    store = make_store()
    imported = store.import_key(PICPIK_PUBLIC, PICPIK_PRIVATE, "picpik-customer")
    store.disable(PICPIK_PUBLIC)
    with pytest.raises(DuplicateKeyError, match="rotate and disable"):
        store.import_key(PICPIK_PUBLIC, "another-private-key", "again")
    assert store.list() == [imported.model_copy(update={"enabled": False})]


def test_racing_imports_of_one_key_store_exactly_one(make_store):
    """The existence check and the write are one atomic step in both backends."""
    contenders = 8
    barrier = threading.Barrier(contenders)
    winners: list[str] = []

    def contend(index: int) -> None:
        store = make_store()
        barrier.wait()
        try:
            store.import_key(PICPIK_PUBLIC, f"private-{index}", f"contender-{index}")
        except DuplicateKeyError:
            return
        winners.append(f"private-{index}")

    threads = [threading.Thread(target=contend, args=(index,)) for index in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(winners) == 1
    assert make_store().private_key(PICPIK_PUBLIC) == winners[0]


@pytest.mark.parametrize("field", ["public_key", "private_key"])
@pytest.mark.parametrize(("text", "character"), BAD_KEY_TEXT)
def test_import_refuses_strings_no_client_can_sign_with(make_store, field, text, character):
    store = make_store()
    pair = {"public_key": PICPIK_PUBLIC, "private_key": PICPIK_PRIVATE} | {field: text}
    with pytest.raises(InvalidKeyError) as error:
        store.import_key(pair["public_key"], pair["private_key"], "n")
    assert error.value.field == field
    if character is None:
        assert str(error.value) == f"{field} must not be empty"
    else:
        assert str(error.value).startswith(f"{field} must not contain whitespace, control or invisible characters")
        assert f"found {character} at position" in str(error.value)
        assert text not in str(error.value)
    assert store.list() == []


def test_imported_key_signs_at_once(make_store):
    """A gateway's store (here: one that already read the store) verifies the imported pair at once."""
    gateway_store = make_store()
    assert gateway_store.private_key(PICPIK_PUBLIC) is None
    make_store().import_key(PICPIK_PUBLIC, PICPIK_PRIVATE, "picpik-customer")
    now = time.time()
    body = txt2img(PublicKey=PICPIK_PUBLIC, Timestamp=int(now))
    signed = body | {"Signature": sign(body, PICPIK_PRIVATE)}
    check = {"lookup_private_key": gateway_store.private_key, "now": now, "require_timestamp": True, "window_s": 300}
    assert verify(signed, **check) == PICPIK_PUBLIC
    forged = body | {"Signature": sign(body, PICPIK_PRIVATE[:-1] + "0")}
    with pytest.raises(SignatureMismatch):
        verify(forged, **check)


def test_redis_store_accepts_a_bytes_client(keys_redis, redis_prefix):
    key = RedisKeyStore(keys_redis, prefix=redis_prefix).create("alice")
    raw_client = open_redis(RedisDb.KEYS)
    try:
        assert RedisKeyStore(raw_client, prefix=redis_prefix).list() == [key]
    finally:
        raw_client.close()


def test_file_format_and_permissions(keys_file):
    key = FileKeyStore(keys_file).create("alice")
    assert yaml.safe_load(keys_file.read_text()) == [key.model_dump(exclude_none=True)]
    assert set(key.model_dump(exclude_none=True)) == {"public_key", "private_key", "name", "enabled"}
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600


def test_missing_file_means_no_keys(keys_file):
    store = FileKeyStore(keys_file)
    assert store.list() == [] and store.private_key("x") is None
    assert not keys_file.exists()


def test_hand_written_file(keys_file):
    keys_file.write_text(
        "- {public_key: pub, private_key: priv, name: ops}\n"
        "- {public_key: 'off', private_key: '123456', name: x, enabled: false}\n"
    )
    store = FileKeyStore(keys_file)
    assert store.private_key("pub") == "priv"
    assert store.private_key("off") is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("- {public_key: [unclosed\n", "not valid YAML"),
        ("public_key: pub\n", "expected a list"),
        ("- {public_key: pub, name: ops}\n", "entry 0"),
        ("- {public_key: pub, private_key: 123456, name: ops}\n", "quote keys"),
        ("- {public_key: p, private_key: a, name: x}\n- {public_key: p, private_key: b, name: y}\n", "twice"),
    ],
)
def test_malformed_file_names_the_file(keys_file, text, reason):
    keys_file.write_text(text)
    with pytest.raises(KeyStoreError, match=reason) as error:
        FileKeyStore(keys_file).private_key("pub")
    assert str(keys_file) in str(error.value)


def _run_cli(keys_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPENPIK_KEYS_FILE": str(keys_file)}
    env.pop("OPENPIK_KEY_STORE", None)
    command = [sys.executable, "-m", "api.keys_cli", *args]
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)


def _printed_keys(output: str) -> tuple[str, str]:
    public = re.search(r"^PublicKey: (\S+)$", output, re.MULTILINE)
    private = re.search(r"^PrivateKey: (\S+)$", output, re.MULTILINE)
    assert public and private, output
    return public.group(1), private.group(1)


def test_file_store_picks_up_cli_changes_without_restart(keys_file):
    gateway_store = FileKeyStore(keys_file)
    assert gateway_store.list() == []

    created = _run_cli(keys_file, "create", "alice")
    assert created.returncode == 0, created.stderr
    public_key, private_key = _printed_keys(created.stdout)
    assert gateway_store.private_key(public_key) == private_key

    rotated = _run_cli(keys_file, "rotate", public_key)
    assert rotated.returncode == 0, rotated.stderr
    assert _printed_keys(rotated.stdout) == (public_key, gateway_store.private_key(public_key))

    disabled = _run_cli(keys_file, "disable", public_key)
    assert disabled.returncode == 0, disabled.stderr
    assert gateway_store.private_key(public_key) is None


def test_cli_unknown_key_exits_2(keys_file):
    result = _run_cli(keys_file, "disable", "nobody")
    assert result.returncode == 2
    assert "unknown public key: nobody" in result.stderr


def test_cli_list_never_prints_private_keys(keys_file, capsys):
    assert keys_cli(["--keys-file", str(keys_file), "create", "alice"]) == 0
    public_key, private_key = _printed_keys(capsys.readouterr().out)
    assert keys_cli(["--keys-file", str(keys_file), "--store", "file", "list"]) == 0
    output = capsys.readouterr().out
    assert output == f"{public_key}\talice\tenabled\n"
    assert private_key not in output


def test_cli_reports_a_malformed_file(keys_file, capsys):
    keys_file.write_text("[unclosed\n")
    assert keys_cli(["--keys-file", str(keys_file), "list"]) == 1
    assert str(keys_file) in capsys.readouterr().err


@pytest.fixture(params=["file", "redis"])
def cli_store(request, keys_file):
    """Options that point the command at a store, and a store reading the same keys.

    The command's Redis store uses the production prefix, so the Redis case imports a
    public key of its own (PICPIK_PUBLIC plus a random suffix) and deletes only that.
    """
    if request.param == "file":
        yield ["--store", "file", "--keys-file", str(keys_file)], FileKeyStore(keys_file), PICPIK_PUBLIC
        return
    client = request.getfixturevalue("keys_redis")
    store = RedisKeyStore(client)
    public_key = f"{PICPIK_PUBLIC}-{uuid.uuid4().hex}"
    yield ["--store", "redis", "--redis-url", redis_url(RedisDb.KEYS)], store, public_key
    client.delete(store.prefix + public_key)


def test_cli_import_masks_the_private_key(cli_store, capsys):
    options, store, public_key = cli_store
    command = [*options, "import", "--public-key", public_key, "--private-key", PICPIK_PRIVATE, "--name", "acme"]
    assert keys_cli(command) == 0
    output = capsys.readouterr()
    assert output.out == f"Name: acme\nPublicKey: {public_key}\nPrivateKey: {'*' * 36}debe\n"
    assert PICPIK_PRIVATE[:-4] not in output.out + output.err
    assert store.private_key(public_key) == PICPIK_PRIVATE
    assert store.get(public_key).name == "acme"


def test_cli_import_default_name(cli_store, capsys):
    options, store, public_key = cli_store
    assert keys_cli([*options, "import", f"--public-key={public_key}", "--private-key=-starts-with-dash"]) == 0
    assert capsys.readouterr().out.startswith("Name: imported\n")
    assert store.private_key(public_key) == "-starts-with-dash"


def test_cli_import_of_an_existing_key_exits_2(cli_store, capsys):
    options, store, public_key = cli_store
    store.import_key(public_key, "the-original-private-key", "original")
    command = [*options, "import", "--public-key", public_key, "--private-key", PICPIK_PRIVATE]
    assert keys_cli(command) == 2
    output = capsys.readouterr()
    assert output.out == ""
    assert output.err == f"error: public key already exists: {public_key} (rotate and disable manage existing keys)\n"
    assert store.private_key(public_key) == "the-original-private-key"
    assert store.get(public_key).name == "original"


@pytest.mark.parametrize("option", ["--public-key", "--private-key"])
@pytest.mark.parametrize(("text", "character"), BAD_KEY_TEXT)
def test_cli_import_names_the_option_of_a_bad_string(keys_file, capsys, option, text, character):
    values = {"--public-key": PICPIK_PUBLIC, "--private-key": PICPIK_PRIVATE} | {option: text}
    command = ["--keys-file", str(keys_file), "import", *(f"{name}={value}" for name, value in values.items())]
    with pytest.raises(SystemExit) as exit_:
        keys_cli(command)
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    rule = "must not be empty" if character is None else "must not contain whitespace, control or invisible"
    assert f"argument {option}: {rule}" in error
    assert not text or text not in error
    assert not keys_file.exists()


def test_cli_import_help_mentions_the_mask(capsys):
    with pytest.raises(SystemExit) as exit_:
        keys_cli(["import", "--help"])
    assert exit_.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "masked but for its last 4 characters" in help_text
    assert "40 hex characters, but any string without whitespace, control or invisible characters" in help_text


@pytest.mark.parametrize(
    ("private_key", "shown"),
    [
        (PICPIK_PRIVATE, "*" * 36 + "debe"),
        ("123456789", "*****6789"),
        ("12345678", "********"),
        ("x", "*"),
    ],
)
def test_cli_import_mask_hides_more_than_it_shows(keys_file, capsys, private_key, shown):
    command = ["--keys-file", str(keys_file), "import", "--public-key", "p", f"--private-key={private_key}"]
    assert keys_cli(command) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"PrivateKey: {shown}"


def test_store_from_settings(keys_file, keys_redis):
    file_store = key_store_from_settings(Settings(key_store="file", keys_file=keys_file))
    assert isinstance(file_store, FileKeyStore) and file_store.path == keys_file
    redis_store = key_store_from_settings(Settings(key_store="redis"), redis_client=keys_redis)
    assert isinstance(redis_store, RedisKeyStore)
    with pytest.raises(KeyStoreError, match="OPENPIK_KEYS_FILE"):
        key_store_from_settings(Settings(key_store="file", keys_file=None))


def test_gateway_modules_do_not_import_torch():
    code = "import sys, api.signature, openpik.keys, api.keys_cli; sys.exit('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr or "torch was imported"
