"""Everything that touches torch: the engine, its model cache, samplers and the Celery task.

Nothing is ever downloaded at run time: models are local files the catalog names. Setting
the hub's offline switch here, before any Hugging Face library is imported, makes an
accidental hub lookup fail at once instead of reaching out.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
