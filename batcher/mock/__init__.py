"""The local mock provider: a real HTTP server on loopback speaking both wire formats."""

from ._app import Faults, MockConfig, MockState, create_app, mock_reply
from ._server import PRESETS, MockServer, preset

__all__ = [
    "PRESETS",
    "Faults",
    "MockConfig",
    "MockServer",
    "MockState",
    "create_app",
    "mock_reply",
    "preset",
]
