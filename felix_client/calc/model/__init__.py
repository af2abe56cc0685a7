"""The node's model of the cluster, from Typha's (key, value) pairs to typed objects.

One job per module, in data-flow order:

- :mod:`.objects` — the typed model objects (endpoints, policies, pools, nodes, ...);
- :mod:`.keys` — classify a key path into a kind and an identity;
- :mod:`.values` — parse a value into a model object (the only place that knows field names);
- :mod:`.updates` — a (key, value) pair to a ``ParsedUpdate`` (unparseable means deleted);
- :mod:`.cluster` — ``ClusterModel``, the store of every parsed object.
"""
