"""Tasks on a Dask cluster (``executor = "dask"``): :mod:`.executor` in the service,
:mod:`.on_worker` in the Dask workers.

Importing this package does not import ``distributed`` (an extra, ``primaa[dask]``):
:func:`check_scheduler` tells, in one line, why the service cannot use it.
"""

from __future__ import annotations

import asyncio
import importlib.util

MISSING_EXTRA = "executor = dask needs the dask extra: pip install 'primaa[dask]'"


def check_scheduler(address: str, timeout: float = 5.0) -> str | None:
    """``None`` when ``distributed`` is installed and the scheduler at ``address`` answers;
    else why not, in one line."""
    if importlib.util.find_spec("distributed") is None:
        return MISSING_EXTRA
    from distributed.comm.core import connect

    async def probe() -> None:
        comm = await connect(address, timeout=timeout)
        await comm.close()

    try:
        asyncio.run(probe())
    except (OSError, TimeoutError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"cannot reach the Dask scheduler at {address!r} (dask_scheduler): {reason}"
    return None
