"""API key stores: who may call the gateway, and with which PrivateKey (spec section 2, hardening).

A YAML file serves a single machine; Redis serves a cluster of gateways. Both are edited
by the `openpik-keys` command while the gateway runs, so reads must see its changes.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import string
import tempfile
import threading
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import redis
import yaml
from pydantic import BaseModel, Field, ValidationError
from redis.typing import EncodableT

from openpik.settings import Settings

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
    def _update(self, public_key: str, **changes: Any) -> ApiKey:
        """Change fields of an existing key atomically; raise UnknownKeyError when absent."""

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


class FileKeyStore(KeyStore):
    """Keys in a YAML list of {public_key, private_key, name, enabled}.

    Reads are cached and refreshed when the file changes, so a key created from the
    command line works without restarting the gateway. Writes replace the file
    atomically, so a reader never sees half a file.
    """

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

    def _update(self, public_key: str, **changes: Any) -> ApiKey:
        with self._exclusive():
            keys = self._read()
            if public_key not in keys:
                raise UnknownKeyError(public_key)
            keys[public_key] = keys[public_key].model_copy(update=changes)
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
        text = yaml.safe_dump([key.model_dump() for key in keys.values()], sort_keys=False)
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
    """One Redis hash per key, `<prefix><public_key>` -> {private_key, name, enabled}.

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

    def _update(self, public_key: str, **changes: Any) -> ApiKey:
        """WATCH/MULTI so a key is never recreated half-empty if it vanishes meanwhile."""
        name = self._name(public_key)

        def change(pipe: redis.client.Pipeline) -> ApiKey:
            fields = pipe.hgetall(name)
            if not fields:
                raise UnknownKeyError(public_key)
            key = self._from_hash(public_key, fields).model_copy(update=changes)
            pipe.multi()
            pipe.hset(name, mapping=_to_hash(key))
            return key

        # redis-py types the callable as returning None; value_from_callable returns its value
        return cast(ApiKey, self._redis.transaction(change, name, value_from_callable=True))  # type: ignore[arg-type]

    def _name(self, public_key: str) -> str:
        return self.prefix + public_key

    def _from_hash(self, public_key: str, fields: Mapping[Any, Any]) -> ApiKey:
        values = {_text(field): _text(value) for field, value in fields.items()}
        try:
            return ApiKey(public_key=public_key, **values)
        except ValidationError as exc:
            raise KeyStoreError(f"Redis hash {self._name(public_key)} is not a valid key: {exc}") from exc


def _to_hash(key: ApiKey) -> dict[EncodableT, EncodableT]:
    """Redis stores strings; "true"/"false" read back as bools through pydantic."""
    return {"private_key": key.private_key, "name": key.name, "enabled": "true" if key.enabled else "false"}


def _text(value: str | bytes) -> str:
    """Clients made without decode_responses return bytes; accept either."""
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _glob_escape(text: str) -> str:
    """SCAN MATCH patterns are globs; a prefix must match only itself."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


def key_store_from_settings(settings: Settings, redis_client: redis.Redis | None = None) -> KeyStore:
    """The store named by OPENPIK_KEY_STORE; redis_client lets the gateway share its connection pool."""
    if settings.key_store == "redis":
        client = redis_client or redis.Redis.from_url(settings.redis_url, decode_responses=True)
        return RedisKeyStore(client)
    if settings.keys_file is None:
        raise KeyStoreError("OPENPIK_KEYS_FILE must name the key file when OPENPIK_KEY_STORE is 'file'")
    return FileKeyStore(settings.keys_file)
