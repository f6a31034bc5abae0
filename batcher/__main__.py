"""``python -m batcher``."""

from ._cli.main import console_main

console_main()
