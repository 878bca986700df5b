"""The seed's "Basic Training Job" example, as written.

Only the model id differs: "microsoft/DialoGPT-medium" needs the hub, so the
built-in tiny Llama stands in. Register a dataset named `conversation_dataset`
first, e.g. `flextrain datasets register conversation_dataset chats.jsonl`.
"""

import asyncio

from ai_karen_engine.core.response.training_interface import (
    BasicTrainingConfig,
    FlexibleTrainingInterface,
    TrainingType,
)

# flextrain's own components stand in for the seed's three services.
enhanced_hf_service = None
training_data_manager = None
system_model_manager = None


async def main() -> None:
    # Initialize interface
    training_interface = FlexibleTrainingInterface(
        enhanced_hf_service=enhanced_hf_service,
        training_data_manager=training_data_manager,
        system_model_manager=system_model_manager,
    )

    # Check model compatibility
    compatibility = await training_interface.check_model_compatibility(
        "flextrain/tiny-llama", TrainingType.FINE_TUNING
    )

    if compatibility.is_compatible:
        # Create basic training configuration
        config = BasicTrainingConfig(
            model_id="flextrain/tiny-llama",
            dataset_id="conversation_dataset",
            training_type=TrainingType.FINE_TUNING,
            num_epochs=3,
            learning_rate=2e-5,
            batch_size=8,
        )

        # Create and start training job
        job = await training_interface.create_basic_training_job(config)
        await training_interface.start_training_job(job.job_id)

        # Monitor progress
        updated_job = training_interface.get_training_job(job.job_id)
        print(f"Progress: {updated_job.progress:.1%}")
        print(f"Job: {job.job_id}")


if __name__ == "__main__":
    asyncio.run(main())
