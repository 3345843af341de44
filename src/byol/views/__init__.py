"""The augmented views: the paper's two view recipes and the domain sets, drawn per image and applied to a batch on its device."""
