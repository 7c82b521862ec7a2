"""CPAL: cross-prompting adapter with LoRA on a dual-stream frozen backbone."""
