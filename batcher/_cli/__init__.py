"""The command line: flags and commands (``main``) and their reports (status, show, plan,
bench, report)."""
