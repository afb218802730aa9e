"""A tiny random-weight MarianMT model with its own SentencePiece vocabulary, built offline.

It translates into nonsense, deterministically: enough to test that non-English prompts go
through translation and English ones do not.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

CORPUS = [
    "a red apple on a wooden table",
    "un chat noir dans la rue",
    "一只可爱的猫在睡觉",
    "ein Hund spielt im Park",
    "una casa grande junto al mar",
    "красивый закат над морем",
    "桜の花と富士山",
    "아름다운 풍경",
]
SPECIAL = ["</s>", "<unk>", "<pad>"]


def build_tiny_translator(out_dir: Path, seed: int = 0) -> Path:
    import sentencepiece
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spm = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 10),
        model_writer=spm,
        vocab_size=64,
        character_coverage=1.0,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    for name in ("source.spm", "target.spm"):
        (out_dir / name).write_bytes(spm.getvalue())
    pieces = sentencepiece.SentencePieceProcessor(model_proto=spm.getvalue())
    vocab = {
        token: i
        for i, token in enumerate(
            dict.fromkeys(SPECIAL + [pieces.id_to_piece(i) for i in range(pieces.get_piece_size())])
        )
    }
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    MarianTokenizer(
        source_spm=str(out_dir / "source.spm"),
        target_spm=str(out_dir / "target.spm"),
        vocab=str(out_dir / "vocab.json"),
    ).save_pretrained(out_dir)
    torch.manual_seed(seed)
    config = MarianConfig(
        vocab_size=len(vocab),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=512,
        pad_token_id=vocab["<pad>"],
        eos_token_id=vocab["</s>"],
        decoder_start_token_id=vocab["<pad>"],
    )
    MarianMTModel(config).save_pretrained(out_dir)
    return out_dir
