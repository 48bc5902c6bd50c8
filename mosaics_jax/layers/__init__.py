"""Layers: the memory units (contextual, persistent), attention, features, the decoding cache."""
