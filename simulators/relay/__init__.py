"""The solver relay v2 simulator: the solver WebSocket at `/ws` and the taker JSON-RPC at
`POST /rpc` (`docs/near-intents-relay.md`), with simulated takers settling against the simulated
`intents.near` (`simulators/verifier.py`).

- `protocol.py`: the wire the daemons talk to — subscriptions, `quote` / `quote_response` /
  `quote_status` frames, `acknowledge` and guaranteed delivery, the taker JSON-RPC — and the
  wire's faults.
- `load.py`: the load driver — the takers (collection window, pick, settle), the quote-request
  streams (`start_scenario`) and the paced benchmark load (`start_load`).
- `api.py`: `RelaySimulator`, the two behind the `/_sim/` control routes.
- `answer_book.py`: the venue's own record of requests sent and answers received
  (`GET /_sim/book`).

`python -m simulators.relay` runs it alone; `python -m simulators` runs it with the others.
"""

from simulators.relay.api import RelaySimulator
from simulators.relay.protocol import BTC, EURE, RelaySimConfig

__all__ = ["BTC", "EURE", "RelaySimConfig", "RelaySimulator"]
