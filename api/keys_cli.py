"""`openpik-keys`: the operator's command line for API keys (create, import, list, disable, rotate).

Changes take effect in a running gateway without a restart: the file store notices the
rewritten file, and the Redis store is shared. Exit status: 0 done; 1 the store cannot
be read or reached; 2 a usage error, or a public key that is unknown (disable, rotate)
or already exists (import).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import redis

from api.keys import (
    ApiKey,
    DuplicateKeyError,
    KeyStore,
    KeyStoreError,
    UnknownKeyError,
    key_store_from_settings,
    key_text_problem,
)
from openpik.settings import Settings

_VISIBLE_TAIL = 4
"""Characters of an imported private key printed in clear, enough to recognise it."""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
    return parser


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
    else:
        for key in store.list():
            print(f"{key.public_key}\t{key.name}\t{'enabled' if key.enabled else 'disabled'}")
    return 0


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
