"""The one error type the converters raise."""

from __future__ import annotations


class InvalidResource(ValueError):
    """A resource that cannot be converted into model keys.

    ``str(err)`` reads ``"<resource>: <field>: <reason>"``, e.g.
    ``"NetworkPolicy web/allow-db: spec.ingress[0].source.nets[1]: '10.0.0.300/24' is not a CIDR"``.
    ``resource`` is filled in by the outermost converter, which knows the kind and name; inner
    helpers only know the field path.
    """

    def __init__(self, reason: str, *, field: str = "", resource: str = "") -> None:
        self.reason = reason
        self.field = field
        self.resource = resource
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [p for p in (self.resource, self.field) if p]
        return ": ".join([*parts, self.reason])

    def in_resource(self, resource: str) -> InvalidResource:
        """The same error, attributed to ``resource`` (kept if already attributed)."""
        if self.resource:
            return self
        return InvalidResource(self.reason, field=self.field, resource=resource)
