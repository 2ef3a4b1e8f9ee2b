"""Backends of the generation engine; each is imported only when selected."""
