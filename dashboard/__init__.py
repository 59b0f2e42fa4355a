"""rmq dashboard: the cluster, its controllers and its traffic in a browser."""
