"""The peers conveyor is compared with: procrastinate and PgQueuer.

Each is driven through its own documented API and CLI, in its own fresh
database, with a worker process started by its own command. They are
dependencies of this package, checked at run time all the same
(``--compare`` leaves out a peer that cannot be imported).
"""

from __future__ import annotations

from ..systems import System
from .pgqueuer_peer import PgQueuerSystem
from .procrastinate_peer import ProcrastinateSystem

__all__ = ["PEERS", "PgQueuerSystem", "ProcrastinateSystem"]

#: ``--compare`` name -> system class.
PEERS: dict[str, type[System]] = {
    "procrastinate": ProcrastinateSystem,
    "pgqueuer": PgQueuerSystem,
}
