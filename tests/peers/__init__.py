"""Process managers and pytest fixtures for the real third-party test peers.

etcd, kube-apiserver, toxiproxy and prometheus are started as subprocesses on random loopback
ports; see docs/peers.md for how the binaries are built and scripts/build-peers.sh.
"""
