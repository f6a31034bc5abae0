"""``python -m batcher``."""

from ._cli import console_main

console_main()
