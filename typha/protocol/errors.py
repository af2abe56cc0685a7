"""Typed protocol errors: the only exceptions the protocol package raises on bad input."""

from __future__ import annotations


class ProtocolError(Exception):
    """The peer broke the protocol. Only the offending connection is closed.

    ``reason`` is a short human-readable explanation suitable for a Goodbye message.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FrameTooLarge(ProtocolError):
    """A frame's declared (or decompressed) length exceeds the receiver's cap."""


class MalformedFrame(ProtocolError):
    """The bytes are not a valid frame or message."""


class UnexpectedMessage(ProtocolError):
    """A well-formed message arrived in a state where it is not allowed."""


class HandshakeRejected(ProtocolError):
    """The handshake failed (unknown syncer type, unsupported version, ...)."""
