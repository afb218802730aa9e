"""A1111's prompt syntax and long prompts, both families, through compel.

A1111's attention syntax is parsed here into weighted fragments (what compel's own parser
produces) and handed to compel's embeddings provider, which weights tokens and encodes
prompts longer than 75 tokens chunk by chunk. compel's string syntax is never involved, so
compel-only constructs in an A1111 prompt (``word+``, ``.and()``, ``.blend()``,
``("a", "b")``) stay plain text: nothing needs escaping.

A prompt whose weights are all 1 and which fits one chunk goes to diffusers as plain text,
exactly as before weighting existed, so such prompts give the same pixels (``(word:1.0)``
included: the translation removes its brackets).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from compel.embeddings_provider import EmbeddingsProvider, SplitLongTextMode

from worker.families import RUNTIMES, PromptEncoding

# --- A1111's attention syntax -> weighted fragments (pure) ---------------------------------

# A1111's tokens (modules/prompt_parser.py): escapes, brackets, an explicit ":weight)", text.
_ATTENTION_TOKEN = re.compile(
    r"""
    \\[()\[\]\\] | \\ | [(\[] | :\s*([+-]?[.\d]+)\s*\) | [)\]] | [^\\()\[\]:]+ | :
    """,
    re.VERBOSE,
)
# BREAK (upper case, a word of its own) ends the current 75-token chunk, as in A1111.
_BREAK = re.compile(r"\s*\bBREAK\b\s*")

# What an unweighted bracket multiplies by, and which opener each closer closes.
BRACKET_WEIGHTS = {"(": 1.1, "[": 1 / 1.1}
CLOSERS = {")": "(", "]": "["}


@dataclass(frozen=True)
class Fragment:
    text: str
    weight: float = 1.0


Segment = tuple[Fragment, ...]
"""Weighted fragments encoded together; a prompt is segments separated by BREAK."""

_BREAK_MARK = object()


def parse_attention(prompt: str) -> tuple[Segment, ...]:
    """A1111's ``parse_prompt_attention``: the prompt's BREAK-separated runs of weighted text.

    ``(x)`` multiplies by 1.1, ``[x]`` by 1/1.1, ``(x:w)`` by w, nesting multiplies;
    ``\\(`` ``\\)`` ``\\[`` ``\\]`` ``\\\\`` are literal, a lone backslash is dropped; a closer
    with nothing open is literal text and brackets left open close at the end. Deviations,
    where A1111 misbehaves: a malformed ``:weight)`` is literal text (A1111 raises), and
    BREAK inside brackets still breaks (A1111 turns it into a negatively weighted word).
    """
    pieces: list = []  # [text, weight] pairs and _BREAK_MARKs
    open_at: dict[str, list[int]] = {opener: [] for opener in BRACKET_WEIGHTS}
    for match in _ATTENTION_TOKEN.finditer(prompt):
        token, weight = match.group(0), _number(match.group(1))
        if token.startswith("\\"):
            pieces.append([token[1:], 1.0])
        elif token in BRACKET_WEIGHTS:
            open_at[token].append(len(pieces))
        elif weight is not None and open_at["("]:
            _scale(pieces, open_at["("].pop(), weight)
        elif token in CLOSERS and open_at[CLOSERS[token]]:
            _scale(pieces, open_at[CLOSERS[token]].pop(), BRACKET_WEIGHTS[CLOSERS[token]])
        else:
            for index, part in enumerate(_BREAK.split(token)):
                pieces += [_BREAK_MARK] * (index > 0) + [[part, 1.0]]
    for opener, starts in open_at.items():
        for start in starts:
            _scale(pieces, start, BRACKET_WEIGHTS[opener])
    return _segments(pieces)


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _scale(pieces: list, start: int, factor: float) -> None:
    for piece in pieces[start:]:
        if piece is not _BREAK_MARK:
            piece[1] *= factor


def _segments(pieces: list) -> tuple[Segment, ...]:
    """Split at BREAKs, merge neighbours of equal weight (as A1111), drop empty segments."""
    segments: list[list[Fragment]] = [[]]
    for piece in pieces:
        if piece is _BREAK_MARK:
            segments.append([])
        elif piece[0]:
            run = segments[-1]
            if run and run[-1].weight == piece[1]:
                run[-1] = Fragment(run[-1].text + piece[0], piece[1])
            else:
                run.append(Fragment(piece[0], piece[1]))
    return tuple(tuple(run) for run in segments if run) or ((),)


def is_unweighted(segments: tuple[Segment, ...]) -> bool:
    """One segment, every weight 1: plain text to diffusers."""
    return len(segments) == 1 and all(f.weight == 1.0 for f in segments[0])


def plain_text(segments: tuple[Segment, ...]) -> str:
    """The prompt's text without its syntax (weights dropped, BREAKs as spaces)."""
    return " ".join("".join(f.text for f in segment) for segment in segments)


# --- clip skip -----------------------------------------------------------------------------


def diffusers_clip_skip(clip_skip: int) -> int | None:
    """A1111's ClipSkip (1 = last layer) -> diffusers' count of layers skipped."""
    return clip_skip - 1 if clip_skip > 1 else None


# --- encoding ------------------------------------------------------------------------------

# A1111 ends a full chunk after its last comma when that comma is among its last 20 tokens.
COMMA_BACKTRACK = 20


class LayerEmbeddings(EmbeddingsProvider):
    """compel's provider reading the hidden layer diffusers reads, chunking as A1111 does."""

    def __init__(self, tokenizer, text_encoder, layer: int, normalized: bool):
        # BRUTAL names no split rule of compel's (ours replaces them) and, unlike compel's
        # default, copies no chunk's end token into the next: A1111 encodes chunks apart.
        super().__init__(tokenizer, text_encoder, truncate=False, split_long_text_mode=SplitLongTextMode.BRUTAL)
        self.layer = layer
        self.normalized = normalized
        self.comma = tokenizer.get_vocab().get(",</w>")

    def _encode_token_ids_to_embeddings(self, token_ids, attention_mask=None):
        output = self.text_encoder(token_ids, attention_mask, output_hidden_states=True, return_dict=True)
        hidden = output.hidden_states[self.layer]
        return self.text_encoder.text_model.final_layer_norm(hidden) if self.normalized else hidden

    def _find_next_best_split_point(self, token_ids, max_length, *args, **kwargs) -> int:
        if len(token_ids) <= max_length or self.comma is None:
            return max_length
        tail = token_ids[max_length - COMMA_BACKTRACK : max_length]
        commas = [i for i, token in enumerate(tail) if token == self.comma]
        return max_length - COMMA_BACKTRACK + commas[-1] + 1 if commas else max_length


def prompt_arguments(pipe, architecture: str, prompt: str, negative_prompt: str, clip_skip: int, enabled: bool) -> dict:
    """The prompt keyword arguments of a diffusers call for ``pipe`` (built for this request).

    Plain prompts (or ``enabled=False``) -> ``prompt``/``negative_prompt``/``clip_skip`` as
    text, diffusers encodes them; otherwise compel's embeddings for both prompts, padded to the
    same length. Clip skip applies to the positive prompt only, as diffusers applies it.
    """
    skip = diffusers_clip_skip(clip_skip)
    if not enabled:
        return plain_arguments(prompt, negative_prompt, skip)
    positive, negative = parse_attention(prompt), parse_attention(negative_prompt)
    encoding = RUNTIMES[architecture].prompt_encoding
    texts = (plain_text(positive), plain_text(negative))
    if is_unweighted(positive) and is_unweighted(negative) and all(_fits(pipe, encoding, t) for t in texts):
        return plain_arguments(texts[0], texts[1], skip)
    with torch.no_grad():
        return _embedded_arguments(pipe, encoding, (positive, negative), texts, skip, not negative_prompt)


def plain_arguments(prompt: str, negative_prompt: str, skip: int | None) -> dict:
    """What the engine passed before weighting existed."""
    return {"prompt": prompt, "negative_prompt": negative_prompt or None, "clip_skip": skip}


def _fits(pipe, encoding: PromptEncoding, text: str) -> bool:
    tokenizers = [getattr(pipe, name) for name, _ in encoding.encoders]
    return all(len(t(text, verbose=False).input_ids) <= t.model_max_length for t in tokenizers)


def _embedded_arguments(pipe, encoding, prompts, texts, skip, negative_empty) -> dict:
    positive_layers = _providers(pipe, encoding, skip or 0)
    negative_layers = _providers(pipe, encoding, 0)
    positive = _embed(positive_layers, prompts[0])
    zeros = negative_empty and encoding.pooled_encoder is not None and _forces_zeros(pipe)
    negative = torch.zeros_like(positive) if zeros else _embed(negative_layers, prompts[1])
    longest = max(positive.shape[1], negative.shape[1])
    positive, negative = _padded(positive, longest, positive_layers), _padded(negative, longest, negative_layers)
    arguments = {"prompt_embeds": positive, "negative_prompt_embeds": negative}
    if encoding.pooled_encoder is None:
        return arguments
    pooled = _pooled(pipe, encoding, texts[0])
    negative_pooled = torch.zeros_like(pooled) if zeros else _pooled(pipe, encoding, texts[1])
    return arguments | {"pooled_prompt_embeds": pooled, "negative_pooled_prompt_embeds": negative_pooled}


def _providers(pipe, encoding: PromptEncoding, skip: int) -> list[LayerEmbeddings]:
    """Built per request: the text encoders' LoRAs change between requests, and so would a cache."""
    layer = -(skip + encoding.layer_offset)
    return [
        LayerEmbeddings(getattr(pipe, tokenizer), getattr(pipe, text_encoder), layer, encoding.normalized)
        for tokenizer, text_encoder in encoding.encoders
    ]


def _embed(providers: list[LayerEmbeddings], segments: tuple[Segment, ...]) -> torch.Tensor:
    """Each BREAK-separated segment in its own chunks, concatenated along the tokens."""
    return torch.cat([_embed_segment(providers, segment) for segment in segments], dim=1)


def _embed_segment(providers: list[LayerEmbeddings], segment: Segment) -> torch.Tensor:
    parts = []
    for provider in providers:
        fragments = _tokenized_fragments(provider, segment)
        parts.append(
            provider.get_embeddings_for_weighted_prompt_fragments(
                text_batch=[[f.text for f in fragments]],
                fragment_weights_batch=[[f.weight for f in fragments]],
                device=provider.text_encoder.device,
            )
        )
    return torch.cat(parts, dim=-1)


def _tokenized_fragments(provider: LayerEmbeddings, segment: Segment) -> list[Fragment]:
    """The fragments that have tokens (compel cannot locate an empty one), or the empty prompt."""
    token_ids = (
        provider.get_token_ids([f.text for f in segment], include_start_and_end_markers=False) if segment else []
    )
    return [f for f, ids in zip(segment, token_ids) if ids] or [Fragment("")]


def _padded(embeddings: torch.Tensor, length: int, providers: list[LayerEmbeddings]) -> torch.Tensor:
    """Lengthened with empty-prompt chunks, as A1111 lengthens the shorter of the two prompts."""
    if embeddings.shape[1] == length:
        return embeddings
    empty = _embed_segment(providers, ())
    return torch.cat([embeddings] + [empty] * ((length - embeddings.shape[1]) // empty.shape[1]), dim=1)


def _pooled(pipe, encoding: PromptEncoding, text: str) -> torch.Tensor:
    """As diffusers pools: the pooled encoder's output for the text's first 77 tokens."""
    tokenizer_name, encoder_name = encoding.encoders[encoding.pooled_encoder]
    tokenizer, encoder = getattr(pipe, tokenizer_name), getattr(pipe, encoder_name)
    ids = tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True)
    return encoder(torch.tensor([ids.input_ids], device=encoder.device))[0]


def _forces_zeros(pipe) -> bool:
    """diffusers' SDXL rule: an empty negative prompt is all zeros when the config says so."""
    return bool(getattr(pipe.config, "force_zeros_for_empty_prompt", False))
