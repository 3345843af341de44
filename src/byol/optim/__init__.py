"""Optimisation shared by pre-training and fine-tuning: LARS, the paper's parameter groups, warm-up and cosine decay."""
