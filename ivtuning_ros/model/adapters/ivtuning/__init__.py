"""IV-tuning: a frozen backbone with infrared prompts from the Modality-aware Prompter."""
