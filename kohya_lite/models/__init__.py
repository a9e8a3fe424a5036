"""Base models: family facts (`families`), offline loading (`load`), tiny builders (`tiny`), the shipped
config-only folders (`configs/`) and CLIP tokenizer (`tokenizer/`, `clip_bpe`), LDM single-file writing (`ldm`).

Submodules are imported on demand (torch/diffusers are heavy): `from kohya_lite.models.load import load_model`.
"""
