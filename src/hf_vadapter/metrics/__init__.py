"""Offline `evaluate` metric modules (CIDEr, BLEU, VQA accuracy) shipped inside the package and loaded by path."""
