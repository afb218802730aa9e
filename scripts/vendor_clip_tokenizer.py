"""Regenerate configs/sd15/tokenizer (CLIP ViT-L/14's BPE tokenizer, MIT licence) offline.

The source is OpenAI's `bpe_simple_vocab_16e6.txt.gz`, which the open_clip_torch wheel on PyPI
ships: `pip download --no-deps open_clip_torch` and unzip that one file. The vocabulary is
derived exactly as CLIP's own tokenizer derives it: the 256 byte symbols, the same with the
end-of-word marker, one token per merge, then the two special tokens.

    PYTHONPATH=. python scripts/vendor_clip_tokenizer.py path/to/bpe_simple_vocab_16e6.txt.gz
"""

import gzip
import json
import sys
from pathlib import Path

from models_registry.tiny import byte_symbols

MERGES = 49152 - 256 - 2
OUT = Path(__file__).resolve().parent.parent / "configs" / "sd15" / "tokenizer"


def main(source: str) -> None:
    with gzip.open(source) as compressed:
        lines = compressed.read().decode("utf-8").split("\n")
    merges = lines[1 : MERGES + 1]
    symbols = list(byte_symbols().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    (OUT / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    (OUT / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
