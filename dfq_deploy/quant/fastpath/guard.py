"""The Brevitas version guard of the fast path.

The fast path reaches into Brevitas' internals (private classes such as ``_NoDelay``, the attribute layout of its
quantizers, the order of its operations), which a Brevitas release may change without notice. It is used only with
the Brevitas versions its contract (``tests/quant/test_fastpath.py``: the same values and gradients as Brevitas' own
path, bit for bit) was run against; with any other version every part of it declines, the work goes through
Brevitas' own modules, and one warning says so. To admit a new version, run the contract test under it and add it
to :data:`CHECKED_BREVITAS`.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging

log = logging.getLogger("dfq_deploy")

CHECKED_BREVITAS = frozenset({"0.13.4"})  # Brevitas versions the bit-identity contract passed under

_warned = False


@functools.lru_cache(maxsize=None)
def _installed_brevitas() -> str | None:
    try:
        return importlib.metadata.version("brevitas")
    except importlib.metadata.PackageNotFoundError:
        return None


def enabled() -> bool:
    """Whether the fast path may be used with the installed Brevitas; logs one warning (per process) if not."""
    global _warned
    version = _installed_brevitas()
    if version in CHECKED_BREVITAS:
        return True
    if not _warned:
        _warned = True
        log.warning("Brevitas %s is not among the versions the CPU fast path was checked against (%s): training "
                    "takes Brevitas' own, slower path", version, ", ".join(sorted(CHECKED_BREVITAS)))
    return False
