"""The leaves everything shares: errors, clocks, JSON, sliding windows, id sets, media refs, the
token counter, option-flag metadata and the run's statistics. Imports nothing else of batcher."""
