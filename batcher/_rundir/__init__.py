"""The run directory: journal and results, manifest, lock, batch log, saved images, attempt log,
and what a rerun resumes."""
