"""`openpik-keys`: the operator's command line for API keys (create, list, disable, rotate).

Changes take effect in a running gateway without a restart: the file store notices the
rewritten file, and the Redis store is shared.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import redis

from api.keys import ApiKey, KeyStore, KeyStoreError, UnknownKeyError, key_store_from_settings
from openpik.settings import Settings


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        store = key_store_from_settings(Settings(**_overrides(args)))
        return _run(store, args)
    except UnknownKeyError as exc:
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
    commands.add_parser("list", help="public keys, names and states (never private keys)")
    disable = commands.add_parser("disable", help="refuse a key from now on")
    disable.add_argument("public_key")
    rotate = commands.add_parser("rotate", help="a new private key for an existing public key; prints both")
    rotate.add_argument("public_key")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Only the options given, so everything else still comes from the environment."""
    options = {"key_store": args.store, "keys_file": args.keys_file, "redis_url": args.redis_url}
    return {field: value for field, value in options.items() if value is not None}


def _run(store: KeyStore, args: argparse.Namespace) -> int:
    if args.command == "create":
        _print_secret(store.create(args.name))
    elif args.command == "rotate":
        _print_secret(store.rotate(args.public_key))
    elif args.command == "disable":
        store.disable(args.public_key)
        print(f"disabled {args.public_key}")
    else:
        for key in store.list():
            print(f"{key.public_key}\t{key.name}\t{'enabled' if key.enabled else 'disabled'}")
    return 0


def _print_secret(key: ApiKey) -> None:
    """The only output that shows a private key: the operator hands both keys to the client."""
    print(f"Name: {key.name}")
    print(f"PublicKey: {key.public_key}")
    print(f"PrivateKey: {key.private_key}")


if __name__ == "__main__":
    sys.exit(main())
