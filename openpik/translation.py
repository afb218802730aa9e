"""Which prompts need translating, decided by one rule for the gateway and the workers.

The rule is deliberately simple: a prompt containing a letter outside ASCII (Chinese,
Cyrillic, accented Latin, ...) is taken as not English and translated; plain ASCII text is
English and passed unchanged, so an English prompt never pays for (or is altered by) a
translation. Workers translate with it (worker/translation.py); the gateway, which knows
whether the catalog names a translator, uses it to tell a client that its prompt needed a
translation this server cannot do.
"""

from __future__ import annotations

import logging
from functools import cache

log = logging.getLogger("openpik.translation")

UNTRANSLATED_NOTE = "prompt translation not configured: a prompt that is not English was passed unchanged"
"""The task record's note (the Note query field) when a prompt needed a translation nobody can do."""


def needs_translation(text: str) -> bool:
    return any(ord(char) > 127 and char.isalpha() for char in text)


def untranslated_note(model_code: str, *prompts: str) -> str:
    """The note of a task that asked for translation on a server without a translator: set only
    when one of its prompts needs translating. The operator is told once per main model (per
    process), enough to learn which models' users write in other languages."""
    if not any(needs_translation(prompt) for prompt in prompts):
        return ""
    _warn_once(model_code)
    return UNTRANSLATED_NOTE


@cache
def _warn_once(model_code: str) -> None:
    log.warning(
        "prompts for model %s need translation but the catalog names no translator: passed unchanged "
        "(name a MarianMT folder as the catalog's translator)",
        model_code,
        extra={"model_code": model_code},
    )
