"""How work and results travel between the main process and the workers (internal).

* :mod:`.pool`: the worker processes and the ZeroMQ sockets between them and the main process;
* :mod:`.shm`: the shared-memory slot ring the workers write batches into;
* :mod:`.codec`: the safe msgpack codec for samples (never unpickles).
"""
