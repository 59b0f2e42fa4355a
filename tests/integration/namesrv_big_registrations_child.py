"""Child process for test_namesrv_big_registrations.py: a NameServer with the limits given as JSON.

Usage: namesrv_big_registrations_child.py '{"max_topics_per_broker": 200000}'

Prints ``rmq namesrv``'s ready line with its port, logs warnings to stderr, serves until
killed. The registry limits are the only thing it changes from a NameServer's defaults.
"""

from __future__ import annotations

import json
import logging
import sys

import trio

from namesrv.registry import RegistryLimits
from namesrv.server import NameServer, NameServerConfig


async def main(limits: dict[str, int]) -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    server = NameServer(NameServerConfig(port=0, limits=RegistryLimits(**limits)))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        print(f"The Name Server boot success. address=127.0.0.1:{port}", flush=True)


if __name__ == "__main__":
    trio.run(main, json.loads(sys.argv[1]))
