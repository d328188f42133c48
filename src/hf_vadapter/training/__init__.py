"""Training on the HF Trainer: arguments, collator, feature cache, trainer and stages."""
