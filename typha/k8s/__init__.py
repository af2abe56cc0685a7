"""Kubernetes API access shared by the server and the node agent: the client and Typha discovery."""
