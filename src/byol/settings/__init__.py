"""Settings: one mechanism (dataclass fields → flags, YAML keys, help, checks), the option groups commands share, the pre-training settings and the recipes that derive them from the data."""
