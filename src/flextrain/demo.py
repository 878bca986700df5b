"""The embedded default job that `make demo` / `flextrain demo` runs.

LoRA on packaged all-MiniLM-L6-v2 for sentiment classification: small enough
to train on a laptop CPU in about a minute, real enough that held-out accuracy
rising from chance shows genuine learning.
"""

from __future__ import annotations

from flextrain.config.enums import TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig
from flextrain.public import MINILM_ID

DEMO_CONFIG = AdvancedTrainingConfig(
    model_id=MINILM_ID,
    dataset_id="demo/sentiment",
    training_type=TrainingType.LORA_ADAPTATION,
    num_epochs=6,
    learning_rate=3e-3,
    batch_size=16,
    max_length=64,
    eval_split=0.25,
    lora_r=8,
    lora_alpha=16,
    lora_dropout=0.05,
    warmup_ratio=0.1,
    logging_steps=10,
    save_total_limit=1,
    gradient_checkpointing=False,
    run_name="demo-sentiment-lora",
)
