"""Where a command's processes write their Prometheus metrics, to be summed by whichever process serves them."""

import os
import sys
import tempfile


def fresh_metrics_dir(command: str) -> str:
    """A fresh directory for this run's per-process metric files, as PROMETHEUS_MULTIPROC_DIR (a stale one would add
    old counts to new ones); prometheus_client reads that setting when first imported, so nothing may have yet."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError(f"prometheus_client was imported before the {command}'s metrics directory was set")
    metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix=f"creditq-{command}-metrics-")
    return metrics_dir
