"""Evaluation: frozen features (k-NN, linear probe), fine-tuning, label splits, metrics, paired verdicts, and the comparison of encoders."""
