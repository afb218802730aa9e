"""A1111's attention syntax -> weighted fragments: one row per rule (pure, no models)."""

from __future__ import annotations

import pytest

from worker.prompts import diffusers_clip_skip, is_unweighted, parse_attention, plain_text

UP, DOWN = 1.1, 1 / 1.1

# prompt -> its BREAK-separated segments of (text, weight). The first rows are A1111's own
# doctests of parse_prompt_attention.
CASES = {
    "normal text": [[("normal text", 1.0)]],
    "an (important) word": [[("an ", 1.0), ("important", UP), (" word", 1.0)]],
    "(unbalanced": [[("unbalanced", UP)]],
    r"\(literal\]": [[("(literal]", 1.0)]],
    "(unnecessary)(parens)": [[("unnecessaryparens", UP)]],
    "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).": [
        [
            ("a ", 1.0),
            ("house", 1.3 * UP * UP),
            (" ", UP),
            ("on", 1.0),
            (" a ", UP),
            ("hill", 0.55),
            (", sun, ", UP),
            ("sky", UP**4),
            (".", UP),
        ]
    ],
    # explicit weights, down-weighting, nesting
    "(word:1.2)": [[("word", 1.2)]],
    "( word : 0.5 )": [[(" word ", 0.5)]],
    "[word]": [[("word", DOWN)]],
    "[[word]]": [[("word", DOWN * DOWN)]],
    "((a:1.5) b:2)": [[("a", 3.0), (" b", 2.0)]],
    "[(word)]": [[("word", 1.0)]],
    "(word:1.0) here": [[("word here", 1.0)]],
    # escapes: literal brackets and backslashes, a lone backslash dropped (as A1111)
    r"\(x\) \[y\]": [[("(x) [y]", 1.0)]],
    r"a \\ b": [[("a \\ b", 1.0)]],
    r"a\b": [[("ab", 1.0)]],
    r"(\(x\))": [[("(x)", UP)]],
    # unbalanced: stray closers are text, open brackets close at the end
    "word) and]": [[("word) and]", 1.0)]],
    "[open (nested": [[("open ", DOWN), ("nested", DOWN * UP)]],
    "a:b": [[("a:b", 1.0)]],
    "a :1.5) b": [[("a :1.5) b", 1.0)]],
    "[word:1.5]": [[("word:1.5", DOWN)]],
    "(word:1.2.3)": [[("word:1.2.3)", UP)]],
    # compel-only syntax is plain text here
    "word+ word- (a)++": [[("word+ word- ", 1.0), ("a", UP), ("++", 1.0)]],
    '("a", "b").and()': [[('"a", "b"', UP), (".and", 1.0)]],
    '("a", "b").blend(0.5, 0.5)': [[('"a", "b"', UP), (".blend", 1.0), ("0.5, 0.5", UP)]],
    "a cat.swap(dog)": [[("a cat.swap", 1.0), ("dog", UP)]],
    # BREAK: a chunk boundary, upper case and a word of its own
    "a BREAK b": [[("a", 1.0)], [("b", 1.0)]],
    "a BREAK (b:1.2)": [[("a", 1.0)], [("b", 1.2)]],
    "(a BREAK b)": [[("a", UP)], [("b", UP)]],
    "a BREAK": [[("a", 1.0)]],
    "a BREAK BREAK b": [[("a", 1.0)], [("b", 1.0)]],
    "a break b, BREAKING": [[("a break b, BREAKING", 1.0)]],
    # nothing at all
    "": [[]],
    "()": [[]],
}


@pytest.mark.parametrize("prompt", CASES)
def test_parse_attention(prompt: str) -> None:
    segments = parse_attention(prompt)
    got = [[(f.text, f.weight) for f in segment] for segment in segments]
    assert got == [[(text, pytest.approx(weight)) for text, weight in segment] for segment in CASES[prompt]]


# prompt -> (goes to diffusers as plain text, that text)
PLAIN = {
    "an apple on a table": (True, "an apple on a table"),
    "  spaces  kept, and: colons ": (True, "  spaces  kept, and: colons "),
    "a (red:1.0) house": (True, "a red house"),
    r"a \(red\) house": (True, "a (red) house"),
    "[(red)] house": (True, "red house"),
    "a (red) house": (False, "a red house"),
    "a [red] house": (False, "a red house"),
    "a BREAK house": (False, "a house"),
    "": (True, ""),
}


@pytest.mark.parametrize("prompt", PLAIN)
def test_plain_prompts_keep_their_text(prompt: str) -> None:
    segments = parse_attention(prompt)
    assert (is_unweighted(segments), plain_text(segments)) == PLAIN[prompt]


@pytest.mark.parametrize(("a1111", "diffusers"), [(0, None), (1, None), (2, 1), (3, 2), (12, 11)])
def test_clip_skip_counts_layers_skipped(a1111: int, diffusers: int | None) -> None:
    assert diffusers_clip_skip(a1111) == diffusers
