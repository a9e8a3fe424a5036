"""kohya-lite: a local, browser-based trainer for Stable Diffusion LoRA adapters."""

__version__ = "0.1.0"
