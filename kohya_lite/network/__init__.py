"""The LoRA network: kohya key names (`naming`), modules and injection (`lora`), the `.safetensors` file with
its hashes (`io`), and the `ss_*` / `modelspec.*` metadata (`metadata`).

Submodules are imported on demand: `from kohya_lite.network.lora import LoRANetwork`.
"""
