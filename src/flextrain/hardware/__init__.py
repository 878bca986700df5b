"""Hardware detection (pure; never initialises CUDA)."""

from flextrain.hardware.detect import GPUInfo, HardwareConstraints, detect_gpus

__all__ = ["GPUInfo", "HardwareConstraints", "detect_gpus"]
