"""What a run is told: the option groups and their flags, limits and tier presets, prices, output
schemas. Imports ``_core`` and ``_jobs``."""
