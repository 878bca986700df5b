"""The seed's "Advanced Training Job" example, as written (model id offline)."""

import asyncio

from ai_karen_engine.core.response.training_interface import (
    AdvancedTrainingConfig,
    FlexibleTrainingInterface,
    TrainingType,
)


async def main() -> None:
    training_interface = FlexibleTrainingInterface()

    # Create advanced configuration with full control
    config = AdvancedTrainingConfig(
        model_id="flextrain/tiny-llama",
        dataset_id="conversation_dataset",
        training_type=TrainingType.LORA_ADAPTATION,
        # Learning parameters
        learning_rate=1e-4,
        weight_decay=0.01,
        adam_beta1=0.9,
        adam_beta2=0.999,
        # Training schedule
        num_epochs=5,
        warmup_steps=100,
        lr_scheduler_type="cosine",
        # Batch settings
        per_device_train_batch_size=16,
        gradient_accumulation_steps=2,
        # Optimization
        fp16=True,
        gradient_checkpointing=True,
        # LoRA settings
        lora_r=32,
        lora_alpha=64,
        lora_dropout=0.1,
        lora_target_modules=["q_proj", "v_proj", "k_proj"],
    )

    job = await training_interface.create_advanced_training_job(config)
    print(f"Job: {job.job_id} {job.status.value}")
    for warning in job.warnings:
        print(f"warning: {warning}")


if __name__ == "__main__":
    asyncio.run(main())
