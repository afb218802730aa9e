"""`openpik-keys`: the operator's command line for API keys (create, import, list, disable, rotate, limit,
allow-callback, deny-callback).

Changes take effect in a running gateway without a restart: the file store notices the
rewritten file, and the Redis store is shared. Exit status: 0 done; 1 the store cannot
be read or reached; 2 a usage error, or a public key that is unknown (disable, rotate,
limit, allow-callback, deny-callback) or already exists (import).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from openpik.callbacks import CallbackUrlError, normalized_url
from openpik.keys import (
    ApiKey,
    Bucket,
    DuplicateKeyError,
    KeyStore,
    KeyStoreError,
    RateLimit,
    UnknownKeyError,
    key_store_from_settings,
    key_text_problem,
)
from openpik.settings import Settings

_VISIBLE_TAIL = 4
"""Characters of an imported private key printed in clear, enough to recognise it."""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "limit" and args.rate is not None and args.burst is None:
        parser.error("limit: --burst is required with --rate")
    try:
        store = key_store_from_settings(Settings(**_overrides(args)))
        return _run(store, args)
    except (UnknownKeyError, DuplicateKeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (KeyStoreError, redis.RedisError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openpik-keys", description=__doc__)
    parser.add_argument("--store", choices=["file", "redis"], help="key store (default: OPENPIK_KEY_STORE)")
    parser.add_argument("--keys-file", type=Path, help="YAML key file (default: OPENPIK_KEYS_FILE)")
    parser.add_argument("--redis-url", help="Redis of the redis store (default: OPENPIK_REDIS_URL)")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="a new key pair; prints both keys")
    create.add_argument("name", help="who the key is for")
    _add_import(commands)
    commands.add_parser("list", help="public keys, names and states (never private keys)")
    disable = commands.add_parser("disable", help="refuse a key from now on")
    disable.add_argument("public_key")
    rotate = commands.add_parser("rotate", help="a new private key for an existing public key; prints both")
    rotate.add_argument("public_key")
    _add_limit(commands)
    _add_callback_commands(commands)
    return parser


def _add_callback_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    allow = commands.add_parser(
        "allow-callback",
        help="let this key's CallbackUrls start with PREFIX (an http:// or https:// URL)",
        description="A key may send CallbackUrl only under one of its prefixes (else RetCode 230). A prefix"
        " without a path ends at its host: https://hooks.example.com allows https://hooks.example.com/...",
    )
    deny = commands.add_parser("deny-callback", help="withdraw PREFIX; tasks already accepted keep their callback")
    for command in (allow, deny):
        command.add_argument("public_key")
        command.add_argument("prefix", type=_callback_prefix)


def _add_limit(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command = commands.add_parser(
        "limit",
        help="this key's own request rate, instead of the OPENPIK_RATE_LIMIT_* settings",
        description="Set or clear one key's token bucket for generate actions or for queries (and catalog"
        " actions). Over it the key gets RetCode 180 with the time to wait.",
    )
    command.add_argument("public_key")
    command.add_argument(
        "--bucket",
        choices=[bucket.value for bucket in Bucket],
        default=Bucket.GENERATE.value,
        help="which actions the limit is for (default: %(default)s)",
    )
    given = command.add_mutually_exclusive_group(required=True)
    given.add_argument(
        "--rate", type=_at_least(float, 0), help="requests per second on average; 0: unlimited for this key"
    )
    given.add_argument("--clear", action="store_true", help="back to the settings' limit")
    command.add_argument("--burst", type=_at_least(int, 1), help="requests allowed at once (required with --rate)")


def _add_import(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    summary = (
        "register an existing key pair (a PICPIK customer's) unchanged, so its clients change nothing;"
        f" prints it with the private key masked but for its last {_VISIBLE_TAIL} characters"
    )
    command = commands.add_parser(
        "import",
        help=summary,
        description=summary + ". A public key the store already holds is refused: rotate and disable manage it.",
        epilog="Write a key that starts with '-' as --public-key=KEY or --private-key=KEY.",
    )
    command.add_argument("--public-key", required=True, type=_key_text, help="the existing PublicKey")
    command.add_argument(
        "--private-key",
        required=True,
        type=_key_text,
        help="the existing PrivateKey: PICPIK's are 40 hex characters, but any string without whitespace,"
        " control or invisible characters is accepted",
    )
    command.add_argument("--name", default="imported", help="who the key is for (default: %(default)s)")


def _at_least(kind: type[float] | type[int], least: int) -> Callable[[str], float]:
    """An argparse type: a number of ``kind`` no smaller than ``least``, so its message names the option."""

    def parse(text: str) -> float:
        try:
            number = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a{'n integer' if kind is int else ' number'}: {text}") from None
        if not (math.isfinite(number) and number >= least):
            raise argparse.ArgumentTypeError(f"must be {least} or more")
        return number

    return parse


def _callback_prefix(text: str) -> str:
    """argparse's check of a prefix, so its message names the argument; stored normalized."""
    try:
        return normalized_url(text)
    except CallbackUrlError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _key_text(text: str) -> str:
    """argparse's check, so its message names the option; the store checks again for other callers."""
    problem = key_text_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Only the options given, so everything else still comes from the environment."""
    options = {"key_store": args.store, "keys_file": args.keys_file, "redis_url": args.redis_url}
    return {field: value for field, value in options.items() if value is not None}


def _run(store: KeyStore, args: argparse.Namespace) -> int:
    if args.command == "create":
        _print_secret(store.create(args.name))
    elif args.command == "rotate":
        _print_secret(store.rotate(args.public_key))
    elif args.command == "import":
        _print_key(store.import_key(args.public_key, args.private_key, args.name), _masked(args.private_key))
    elif args.command == "disable":
        store.disable(args.public_key)
        print(f"disabled {args.public_key}")
    elif args.command == "limit":
        _set_limit(store, args)
    elif args.command in CALLBACK_COMMANDS:
        key = CALLBACK_COMMANDS[args.command](store, args.public_key, args.prefix)
        print(f"{key.public_key}\tcallbacks: {_prefixes_text(key)}")
    else:
        for key in store.list():
            limits = "".join(
                f"\t{_limit_text(bucket, limit)}" for bucket in Bucket if (limit := key.rate_limit(bucket))
            )
            callbacks = f"\tcallbacks: {_prefixes_text(key)}" if key.callback_url_prefixes else ""
            print(f"{key.public_key}\t{key.name}\t{'enabled' if key.enabled else 'disabled'}{limits}{callbacks}")
    return 0


CALLBACK_COMMANDS: dict[str, Callable[[KeyStore, str, str], ApiKey]] = {
    "allow-callback": KeyStore.allow_callback,
    "deny-callback": KeyStore.deny_callback,
}


def _prefixes_text(key: ApiKey) -> str:
    return " ".join(key.callback_url_prefixes) or "none"


def _set_limit(store: KeyStore, args: argparse.Namespace) -> None:
    bucket = Bucket(args.bucket)
    limit = None if args.clear else RateLimit(per_s=args.rate, burst=args.burst)
    store.set_rate_limit(args.public_key, bucket, limit)
    shown = _limit_text(bucket, limit) if limit else f"{bucket}: the settings' limit"
    print(f"{args.public_key}\t{shown}")


def _limit_text(bucket: Bucket, limit: RateLimit) -> str:
    return f"{bucket}: unlimited" if limit.per_s == 0 else f"{bucket}: {limit.per_s:g}/s burst {limit.burst}"


def _print_secret(key: ApiKey) -> None:
    """The only output that shows a private key: the operator hands both keys to the client."""
    _print_key(key, key.private_key)


def _print_key(key: ApiKey, private_key_shown: str) -> None:
    print(f"Name: {key.name}")
    print(f"PublicKey: {key.public_key}")
    print(f"PrivateKey: {private_key_shown}")


def _masked(private_key: str) -> str:
    """An imported key's owner already holds it: show its length and tail, not the secret.

    A key too short to hide more than it shows is masked entirely.
    """
    hidden = len(private_key) - _VISIBLE_TAIL
    if hidden <= _VISIBLE_TAIL:
        return "*" * len(private_key)
    return "*" * hidden + private_key[hidden:]


if __name__ == "__main__":
    sys.exit(main())
