"""The leaves everything shares: errors, clocks, JSON, sliding windows, id sets, media refs, the
stores a URL is read through, the token counter, option-flag metadata and the run's statistics.
Imports nothing else of batcher."""
