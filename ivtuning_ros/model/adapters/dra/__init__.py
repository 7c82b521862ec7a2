"""DRA: decoupled, reusable adaptation (a modality LoRA learnt once without labels, then
light task prompts and a mixture of modality experts per task)."""
