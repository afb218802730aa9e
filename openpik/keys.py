"""API key stores: who may call the gateway, and with which PrivateKey (spec section 2, hardening).

The gateway checks signatures with them; callback workers sign webhooks with the same
PrivateKey, so the stores live in openpik/, which both sides import.

A YAML file serves a single machine; Redis serves a cluster of gateways. Both are edited
by the `openpik-keys` command while the gateway runs, so reads must see its changes.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import string
import tempfile
import threading
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any, cast

import redis
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from redis.typing import EncodableT

from openpik.callbacks import normalized_url
from openpik.redis_connection import Role
from openpik.redis_connection import redis_client as connect_redis
from openpik.settings import Settings


class Bucket(StrEnum):
    """Which bucket an action takes from (api.actions classifies every action)."""

    GENERATE = "generate"
    QUERY = "query"


class RateLimit(BaseModel):
    model_config = ConfigDict(frozen=True)

    per_s: float = Field(ge=0, allow_inf_nan=False, description="Requests per second on average; 0: unlimited")
    burst: int = Field(ge=1, description="Requests allowed at once after a quiet spell")


# Letters and digits only: url-safe, and never starting with "-", which a command line
# would take for an option.
_PUBLIC_KEY_ALPHABET = string.ascii_letters + string.digits
_PUBLIC_KEY_LENGTH = 32
_PRIVATE_KEY_BYTES = 20  # 40 hex characters, the length of PICPIK's private keys


class ApiKey(BaseModel):
    public_key: str = Field(min_length=1)
    private_key: str = Field(min_length=1)
    name: str
    enabled: bool = True
    rate_limit_generate: RateLimit | None = None
    """This key's own limit of generate actions; None: the settings' (OPENPIK_RATE_LIMIT_GENERATE_*)."""
    rate_limit_query: RateLimit | None = None
    """This key's own limit of queries and catalog actions; None: the settings'."""
    callback_url_prefixes: list[str] = Field(default=[], exclude_if=lambda prefixes: not prefixes)
    """The URLs this key's CallbackUrls may start with (normalized: openpik.callbacks); none: no callbacks."""

    @field_validator("rate_limit_generate", "rate_limit_query", "callback_url_prefixes", mode="before")
    @classmethod
    def _from_json(cls, value: Any) -> Any:
        """The Redis store keeps limits and prefixes as JSON text."""
        return json.loads(value) if isinstance(value, str) else value

    @field_validator("callback_url_prefixes")
    @classmethod
    def _normalized_prefixes(cls, prefixes: list[str]) -> list[str]:
        """Compared in normalized form, so a hand-edited key file matches as the command writes it."""
        return [normalized_url(prefix) for prefix in prefixes]

    def rate_limit(self, bucket: Bucket) -> RateLimit | None:
        limit: RateLimit | None = getattr(self, RATE_LIMIT_FIELDS[bucket])
        return limit


RATE_LIMIT_FIELDS = {Bucket.GENERATE: "rate_limit_generate", Bucket.QUERY: "rate_limit_query"}
"""The ApiKey field holding each bucket's override."""


Prefixes = list[str]
"""URL prefixes, normalized (openpik.callbacks.normalized_url); named because KeyStore.list shadows list."""


class KeyStoreError(Exception):
    """The store cannot be read or is not configured; the message says where and why."""


class DuplicateKeyError(ValueError):
    """A new key named a public key the store already holds, enabled or not."""

    def __init__(self, public_key: str):
        super().__init__(f"public key already exists: {public_key} (rotate and disable manage existing keys)")
        self.public_key = public_key


class InvalidKeyError(ValueError):
    """A key string no client could sign with; the message names the field and the rule."""

    def __init__(self, field: str, rule: str):
        super().__init__(f"{field} {rule}")
        self.field = field
        self.rule = rule


class UnknownKeyError(LookupError):
    """An operation named a public key the store does not hold."""

    def __init__(self, public_key: str):
        super().__init__(f"unknown public key: {public_key}")
        self.public_key = public_key


def new_public_key() -> str:
    return "".join(secrets.choice(_PUBLIC_KEY_ALPHABET) for _ in range(_PUBLIC_KEY_LENGTH))


def new_private_key() -> str:
    return secrets.token_hex(_PRIVATE_KEY_BYTES)


def key_text_problem(text: str) -> str | None:
    """Why a key string from elsewhere is unusable, or None when it is fine.

    Whitespace and control or invisible characters (Unicode category C: controls, format
    characters such as a zero-width space or BOM, surrogates, private-use and unassigned
    code points) are lost or altered by copy-paste, YAML and clients' own string
    handling, so a signature over them would not match. The message never quotes the
    text, which may be a secret. Nothing else is required: PICPIK's private keys are 40
    hex characters and its public keys look like e-mail addresses, but any other
    printable string signs the same way.
    """
    if not text:
        return "must not be empty"
    for position, char in enumerate(text, start=1):
        if char.isspace() or unicodedata.category(char).startswith("C"):
            return (
                "must not contain whitespace, control or invisible characters"
                f" (found U+{ord(char):04X} at position {position})"
            )
    return None


def _checked_key_text(field: str, text: str) -> str:
    problem = key_text_problem(text)
    if problem is not None:
        raise InvalidKeyError(field, problem)
    return text


class KeyStore(ABC):
    """Key lifecycle shared by every backend; a backend only stores and fetches ApiKeys."""

    in_memory = False
    """Whether ``get`` answers from memory, so the gateway may call it on its event loop."""

    @abstractmethod
    def get(self, public_key: str) -> ApiKey | None:
        """The key, enabled or not; None when unknown."""

    @abstractmethod
    def list(self) -> list[ApiKey]:
        """Every key, disabled ones included."""

    @abstractmethod
    def _insert(self, key: ApiKey) -> None:
        """Store a new key atomically; raise DuplicateKeyError when its public key is taken."""

    @abstractmethod
    def _modify(self, public_key: str, change: Callable[[ApiKey], ApiKey]) -> ApiKey:
        """Replace an existing key by ``change`` of it, atomically (read and write under one lock or
        transaction, so two commands never lose each other's change); UnknownKeyError when absent."""

    def _update(self, public_key: str, **changes: Any) -> ApiKey:
        return self._modify(public_key, lambda key: key.model_copy(update=changes))

    def private_key(self, public_key: str) -> str | None:
        """What signature checks need: None for unknown and disabled keys alike."""
        key = self.get(public_key)
        return key.private_key if key is not None and key.enabled else None

    def create(self, name: str) -> ApiKey:
        key = ApiKey(public_key=new_public_key(), private_key=new_private_key(), name=name)
        self._insert(key)
        return key

    def import_key(self, public_key: str, private_key: str, name: str) -> ApiKey:
        """Register a pair issued elsewhere (PICPIK's), so its clients change nothing.

        A public key the store holds is refused rather than replaced: overwriting would
        silently cut off whoever uses it, and rotate and disable manage existing keys.
        """
        key = ApiKey(
            public_key=_checked_key_text("public_key", public_key),
            private_key=_checked_key_text("private_key", private_key),
            name=name,
        )
        self._insert(key)
        return key

    def disable(self, public_key: str) -> None:
        self._update(public_key, enabled=False)

    def rotate(self, public_key: str) -> ApiKey:
        """A new PrivateKey under the same PublicKey: the old one stops working at once."""
        return self._update(public_key, private_key=new_private_key())

    def set_rate_limit(self, public_key: str, bucket: Bucket, limit: RateLimit | None) -> ApiKey:
        """This key's own limit for one bucket (rate 0: unlimited); None goes back to the settings'."""
        return self._update(public_key, **{RATE_LIMIT_FIELDS[bucket]: limit})

    def callback_url_prefixes(self, public_key: str) -> Prefixes:
        """Where the key's callbacks may go; none for unknown and disabled keys."""
        key = self.get(public_key)
        return key.callback_url_prefixes if key is not None and key.enabled else []

    def allow_callback(self, public_key: str, prefix: str) -> ApiKey:
        """Let the key's CallbackUrls start with ``prefix`` (CallbackUrlError when it is no http(s) URL)."""
        prefix = normalized_url(prefix)
        return self._modify(
            public_key,
            lambda key: key.model_copy(
                update={"callback_url_prefixes": [*dict.fromkeys([*key.callback_url_prefixes, prefix])]}
            ),
        )

    def deny_callback(self, public_key: str, prefix: str) -> ApiKey:
        """Withdraw ``prefix``; tasks already accepted under it still get their callback."""
        prefix = normalized_url(prefix)
        return self._modify(
            public_key,
            lambda key: key.model_copy(
                update={"callback_url_prefixes": [p for p in key.callback_url_prefixes if p != prefix]}
            ),
        )


class FileKeyStore(KeyStore):
    """Keys in a YAML list of {public_key, private_key, name, enabled}, and a key's own
    rate limits where it has them (rate_limit_generate, rate_limit_query: {per_s, burst}) and
    the URL prefixes its callbacks may use (callback_url_prefixes: [..]).

    Reads are cached and refreshed when the file changes, so a key created from the
    command line works without restarting the gateway. Writes replace the file
    atomically, so a reader never sees half a file.
    """

    in_memory = True  # a stat of the file, then the cache

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._cache_lock = threading.Lock()
        # A missing file stamps as None and means no keys, so the initial state is consistent.
        self._cached_stamp: tuple[int, int, int] | None = None
        self._cached_keys: dict[str, ApiKey] = {}

    def get(self, public_key: str) -> ApiKey | None:
        return self._keys().get(public_key)

    def list(self) -> list[ApiKey]:
        return list(self._keys().values())

    def _insert(self, key: ApiKey) -> None:
        with self._exclusive():
            keys = self._read()
            if key.public_key in keys:
                raise DuplicateKeyError(key.public_key)
            keys[key.public_key] = key
            self._write(keys)

    def _modify(self, public_key: str, change: Callable[[ApiKey], ApiKey]) -> ApiKey:
        with self._exclusive():
            keys = self._read()
            if public_key not in keys:
                raise UnknownKeyError(public_key)
            keys[public_key] = change(keys[public_key])
            self._write(keys)
            return keys[public_key]

    def _keys(self) -> dict[str, ApiKey]:
        """The cached keys, re-read when the file's identity, mtime or size changed.

        The stamp is taken before reading: a change racing the read only causes one
        extra re-read later, never a stale cache. The inode is part of the stamp
        because every write is a rename, which catches changes within one mtime tick.
        """
        stamp = self._stamp()
        with self._cache_lock:
            if stamp != self._cached_stamp:
                self._cached_keys = self._read()
                self._cached_stamp = stamp
            return self._cached_keys

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def _read(self) -> dict[str, ApiKey]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            entries = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise KeyStoreError(f"{self.path}: not valid YAML: {exc}") from exc
        return self._parse(entries or [])

    def _parse(self, entries: Any) -> dict[str, ApiKey]:
        if not isinstance(entries, list):
            raise KeyStoreError(f"{self.path}: expected a list of keys, found {type(entries).__name__}")
        keys: dict[str, ApiKey] = {}
        for index, entry in enumerate(entries):
            try:
                key = ApiKey.model_validate(entry)
            except ValidationError as exc:
                raise KeyStoreError(
                    f"{self.path}: entry {index} is not a valid key (quote keys that YAML would read"
                    f" as numbers or booleans, such as 123456 or off): {exc}"
                ) from exc
            if key.public_key in keys:
                raise KeyStoreError(f"{self.path}: public key {key.public_key} appears twice")
            keys[key.public_key] = key
        return keys

    def _write(self, keys: Mapping[str, ApiKey]) -> None:
        """Temp file in the same directory, fsync, rename: readers see the old or the new file.

        mkstemp creates the file readable by its owner only, which suits private keys.
        """
        text = yaml.safe_dump([_entry(key) for key in keys.values()], sort_keys=False)
        fd, temp_path = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as temp:
                temp.write(text)
                temp.flush()
                os.fsync(temp.fileno())
            os.replace(temp_path, self.path)
        except BaseException:
            os.unlink(temp_path)
            raise

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Serialise read-modify-write across processes (two commands, or command and gateway)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            yield


class RedisKeyStore(KeyStore):
    """One Redis hash per key, `<prefix><public_key>` -> {private_key, name, enabled}, plus a
    key's own rate limits and callback_url_prefixes as JSON where it has them.

    Every gateway of a cluster reads the same hashes, so no cache is needed to see changes.
    """

    def __init__(self, redis_client: redis.Redis, prefix: str = "openpik:keys:"):
        self._redis = redis_client
        self.prefix = prefix

    def get(self, public_key: str) -> ApiKey | None:
        fields = self._redis.hgetall(self._name(public_key))
        return self._from_hash(public_key, fields) if fields else None

    def list(self) -> list[ApiKey]:
        names = sorted(_text(name) for name in self._redis.scan_iter(match=_glob_escape(self.prefix) + "*"))
        with self._redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(name)
            hashes = pipe.execute()
        return [self._from_hash(name[len(self.prefix) :], fields) for name, fields in zip(names, hashes) if fields]

    def _insert(self, key: ApiKey) -> None:
        """WATCH/MULTI so two imports of one public key cannot both succeed."""
        name = self._name(key.public_key)

        def insert(pipe: redis.client.Pipeline) -> None:
            if pipe.exists(name):
                raise DuplicateKeyError(key.public_key)
            pipe.multi()
            pipe.hset(name, mapping=_to_hash(key))

        self._redis.transaction(insert, name)

    def _modify(self, public_key: str, change: Callable[[ApiKey], ApiKey]) -> ApiKey:
        """WATCH/MULTI so a key is never recreated half-empty if it vanishes meanwhile, and a change
        made by someone else meanwhile makes this one start over from the new key."""
        name = self._name(public_key)

        def replace(pipe: redis.client.Pipeline) -> ApiKey:
            fields = pipe.hgetall(name)
            if not fields:
                raise UnknownKeyError(public_key)
            key = change(self._from_hash(public_key, fields))
            pipe.multi()
            pipe.delete(name)  # so a field set to None (a cleared rate limit) goes too
            pipe.hset(name, mapping=_to_hash(key))
            return key

        # redis-py types the callable as returning None; value_from_callable returns its value
        return cast(ApiKey, self._redis.transaction(replace, name, value_from_callable=True))  # type: ignore[arg-type]

    def _name(self, public_key: str) -> str:
        return self.prefix + public_key

    def _from_hash(self, public_key: str, fields: Mapping[Any, Any]) -> ApiKey:
        values = {_text(field): _text(value) for field, value in fields.items()}
        try:
            return ApiKey(public_key=public_key, **values)
        except ValidationError as exc:
            raise KeyStoreError(f"Redis hash {self._name(public_key)} is not a valid key: {exc}") from exc


def _entry(key: ApiKey) -> dict[str, Any]:
    """A key file entry: rate limits and callback prefixes only where a key has them."""
    return key.model_dump(mode="json", exclude_none=True)


def _to_hash(key: ApiKey) -> dict[EncodableT, EncodableT]:
    """Redis stores strings; "true"/"false" read back as bools, and the JSON of limits and prefixes as
    themselves, through pydantic. Limits and prefixes only where a key has them."""
    optional: dict[EncodableT, EncodableT] = {
        field: limit.model_dump_json() for field in RATE_LIMIT_FIELDS.values() if (limit := getattr(key, field))
    }
    if key.callback_url_prefixes:
        optional["callback_url_prefixes"] = json.dumps(key.callback_url_prefixes)
    return {"private_key": key.private_key, "name": key.name, "enabled": "true" if key.enabled else "false"} | optional


def _text(value: str | bytes) -> str:
    """Clients made without decode_responses return bytes; accept either."""
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _glob_escape(text: str) -> str:
    """SCAN MATCH patterns are globs; a prefix must match only itself."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


def key_store_from_settings(settings: Settings, redis_client: redis.Redis | None = None) -> KeyStore:
    """The store named by OPENPIK_KEY_STORE; redis_client lets the gateway share its connection pool."""
    if settings.key_store == "redis":
        client = redis_client or connect_redis(settings, Role.TOOL, decode_responses=True)
        return RedisKeyStore(client)
    if settings.keys_file is None:
        raise KeyStoreError("OPENPIK_KEYS_FILE must name the key file when OPENPIK_KEY_STORE is 'file'")
    return FileKeyStore(settings.keys_file)
