"""The seed's "Hardware Constraint Detection" example, as written."""

from ai_karen_engine.core.response.training_interface import HardwareConstraints

# Detect current hardware
constraints = HardwareConstraints.detect_current()

print(f"Available Memory: {constraints.available_memory_gb:.1f} GB")
print(f"GPU Memory: {constraints.available_gpu_memory_gb:.1f} GB")
print(f"GPU Count: {constraints.gpu_count}")
print(f"Mixed Precision Support: {constraints.supports_mixed_precision}")
print(f"Recommended Precision: {constraints.recommended_precision}")
