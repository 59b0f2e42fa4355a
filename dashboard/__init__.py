"""rmq dashboard: the cluster, its controllers and its traffic, in a browser.

Layout: ``model.py`` (pure: what the page shows, the failover timeline, throughput),
``sources.py`` (the reads: the SDK's admin calls and the controllers' ``/metrics``),
``app.py`` (the ASGI app: JSON endpoints, the static page, guarded admin actions),
``server.py`` (the poll loop and hypercorn on Trio), ``static/`` (HTML, JS, CSS).
This package imports ``client/`` and ``protocol/`` only (DESIGN §9): it sees the cluster
as any RocketMQ admin tool would, over the wire.
"""
