"""Restore an archive on a Ray cluster, with the one-host pipeline's semantics (``restore --cluster``).

Modules: ``connect`` (import Ray or say how to install it; join or start a cluster,
quietly), ``bundle`` (the enrolled people and models the workers need, packed once
and shipped through the object store), ``worker`` (one actor per worker: the
one-host pipeline, :func:`facefix.restore.api.load_runner`, fed photo by photo),
``executor`` (:class:`~facefix.cluster.executor.RayExecutor`: the driver; resume
decisions, bounded work in flight, the run record written there alone as results
come back). Ray itself is imported only when a cluster run starts. docs/scaling.md
says how to run it on a real cluster.
"""
