"""launcher/: the local processes of a cluster, from plan to stop.

What lives where:
- ``plans.py``: (pure) deployment mode -> node plans: the modes table, the controller
  quorum's layout, each process's command line and directories, restart pinning.
- ``record.py``: the cluster record ``D/cluster.json`` (``Node``, ``Cluster``), its atomic
  write, the directory lock.
- ``ready.py``: (pure) the one ready line per server kind: how servers print it, how
  everyone else parses it.
- ``command.py``: how to run ``rmq`` and the environment every child gets.
- ``pids.py``: whether a recorded pid is still the recorded process (``/proc``).
- ``detached.py``: start a recorded node detached and wait for its ready line; stop a
  recorded cluster (SIGTERM, deadline, SIGKILL). Used by ``rmq cluster|quorum`` and the
  chaos harness.
- ``child.py``: a Trio-managed child with drained pipes, stopped when its block ends
  (tests, benchmarks).
- ``ports.py``: free ports, for layouts that must know them before anything starts.
- ``netns.py``: separate hosts on one machine (root): the pure address plan, setup and
  teardown of namespaces, veth pairs and a bridge (recorded in ``D/netns.json``), and the
  tc rules that drop packets on those links (link faults).

Rules:
- launcher/ imports no server code (``broker/``, ``controller/``, ``namesrv/``) and nothing
  of ``cli/``, ``scenarios/`` or ``bench/``, which build on it. Settings that need a
  server's own config code to check or to write are checked and written by ``cli/`` and
  reach this package as plain values and paths.
- Every wait has a deadline; every process started here is stopped by whoever started
  it (``managed_process``'s block, or ``rmq cluster down`` through the record).
"""
