"""The local mock provider: a real HTTP server on loopback speaking both wire formats."""

from ._asgi import create_app
from ._config import MockConfig
from ._faults import Faults
from ._reply import mock_reply
from ._server import PRESETS, MockServer, preset
from ._state import MockState

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
