"""The bottom layer, which imports nothing else of byol: one-line user errors, the device, and the run directory every stage reads or writes."""
