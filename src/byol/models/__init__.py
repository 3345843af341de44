"""Models: encoders from any backbone, the weights an encoder is loaded from, and the self-supervised methods (heads and losses) around it."""
