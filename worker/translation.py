"""TranslatePrompt: non-English prompts through a local MarianMT model, English ones untouched.

Which prompts are "not English" is openpik.translation.needs_translation's rule (a letter
outside ASCII), shared with the gateway, which notes the prompts it cannot have translated.
"""

from __future__ import annotations

from pathlib import Path

from openpik.job import Job
from openpik.translation import needs_translation

MAX_NEW_TOKENS = 128  # CLIP reads 77 tokens; a longer translation is cut anyway


class Translator:
    """A MarianMT model and tokenizer from a local folder, loaded once per worker process."""

    def __init__(self, model_dir: Path):
        from transformers import MarianMTModel, MarianTokenizer

        self.tokenizer = MarianTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model = MarianMTModel.from_pretrained(model_dir, local_files_only=True).eval()

    def translate(self, text: str) -> str:
        import torch

        inputs = self.tokenizer(text, return_tensors="pt", truncation=True)
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                num_beams=1,
                do_sample=False,
                max_new_tokens=min(MAX_NEW_TOKENS, self.model.config.max_position_embeddings),
            )
        return self.tokenizer.decode(output[0], skip_special_tokens=True)

    def translate_job(self, job: Job) -> Job:
        """The Job with each prompt that needs it translated; the same Job when none does."""
        changed = {
            field: self.translate(text)
            for field, text in (("prompt", job.prompt), ("negative_prompt", job.negative_prompt))
            if needs_translation(text)
        }
        return job.model_copy(update=changed) if changed else job
