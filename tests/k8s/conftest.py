"""Fixtures shared by this directory's tests."""

from tests.k8s.helpers import kube  # noqa: F401  (a fixture: pytest finds it here)
