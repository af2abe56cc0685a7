"""Structured logging (structlog over the standard library), configured like Typha.

Screen, file and syslog each have their own minimum severity; ``none`` disables a sink.
Records go through a bounded queue to a background thread, so a blocked sink never stalls the
event loop: when the queue is full, records are dropped and counted in ``typha_logs_dropped``
(Typha's behaviour), unless DebugDisableLogDropping is set.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import queue
import sys
from typing import Any

import structlog

from typha import metrics

_listener: logging.handlers.QueueListener | None = None


class _DroppingQueueHandler(logging.handlers.QueueHandler):
    def __init__(self, q: queue.Queue[Any], block: bool) -> None:
        super().__init__(q)
        self._block = block

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # The stdlib version formats the record here, turning structlog's event dict into a
        # string; the listener's ProcessorFormatter needs the dict, so pass it on untouched.
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        if self._block:
            self.queue.put(record)
            return
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            metrics.logs_dropped.inc()

    def handleError(self, record: logging.LogRecord) -> None:
        metrics.log_errors.inc()


def _level(name: str) -> int:
    return getattr(logging, name.upper(), logging.INFO) if name else logging.CRITICAL + 10


def configure_logging(
    *,
    screen: str = "INFO",
    file_level: str = "INFO",
    file_path: str = "",
    sys_level: str = "",
    fmt: str = "console",
    block: bool = False,
) -> None:
    """(Re)configure logging. Empty levels or paths disable that sink."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    formatter = structlog.stdlib.ProcessorFormatter(
        processor=renderer,
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
        ],
    )
    handlers: list[logging.Handler] = []
    if screen:
        h = logging.StreamHandler(sys.stdout)
        h.setLevel(_level(screen))
        handlers.append(h)
    if file_path and file_level:
        os.makedirs(os.path.dirname(file_path) or ".", exist_ok=True)
        h = logging.FileHandler(file_path)
        h.setLevel(_level(file_level))
        handlers.append(h)
    if sys_level and os.path.exists("/dev/log"):
        h = logging.handlers.SysLogHandler(address="/dev/log")
        h.setLevel(_level(sys_level))
        handlers.append(h)
    for h in handlers:
        h.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    q: queue.Queue[Any] = queue.Queue(maxsize=0 if block else 1000)
    root.addHandler(_DroppingQueueHandler(q, block))
    root.setLevel(min([h.level for h in handlers], default=logging.CRITICAL))
    _listener = logging.handlers.QueueListener(q, *handlers, respect_handler_level=True)
    _listener.start()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def configure_from(cfg: Any) -> None:
    path = cfg.log_file_path
    configure_logging(
        screen=cfg.log_severity_screen,
        file_level=cfg.log_severity_file,
        file_path="" if path in ("", "none") else path,
        sys_level=cfg.log_severity_sys,
        fmt=cfg.log_format,
        block=cfg.debug_disable_log_dropping,
    )


def flush() -> None:
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None
