"""Joining a Ray cluster, or starting one on this machine, kept on loopback.

Ray is imported only through ``import_ray``, when a cluster run is asked for, so ``import batcher``
works without the ``batcher[ray]`` extra.
"""

from __future__ import annotations

from typing import Any

from .._core.errors import UsageError

__all__ = ["LOCAL_ENV", "NAMESPACE", "connect", "import_ray"]

NAMESPACE = "batcher"
"""The Ray namespace of the budget actors, so that every driver of a cluster finds them."""

LOCAL_ENV = {
    # Ray 2.60 refuses a single-node cluster on 127.0.0.1 without it
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    # no usage statistics, and nowhere to send them but loopback
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_USAGE_STATS_REPORT_URL": "http://127.0.0.1:9/",
    # no token authentication between a local cluster's own processes
    "RAY_AUTH_MODE": "disabled",
}
"""The environment a local cluster needs to stay on this machine (with a ``HOME`` holding
``ray_bootstrap_config.yaml``, else the dashboard agent probes cloud metadata; README)."""


def import_ray() -> Any:
    """The ``ray`` module (with ``ray.data``), or ``UsageError`` saying how to install it."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise UsageError(
            "Ray is not installed: pip install 'batcher[ray]' to run on a cluster"
        ) from None
    return ray


def connect(address: str = "local", *, num_cpus: int | None = None) -> None:
    """Join the cluster at ``address``, or start a single-node one on 127.0.0.1 (``"local"``).

    Does nothing if this process is connected already (a caller's own ``ray.init`` wins).
    """
    ray = import_ray()
    if ray.is_initialized():
        return
    if address == "local":
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            namespace=NAMESPACE,
            log_to_driver=False,
            configure_logging=False,
        )
    else:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
