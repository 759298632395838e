"""Upstream models served by several replicas: which replica takes a request (routing.py, by the
conversation's prefix and the replicas' load), which replicas are sick (health.py), and the set
that ties them together behind one Upstream-like interface (replica_set.py)."""
