"""The ``typha`` command: serve, check-config, version, apply, delete."""

from __future__ import annotations

import argparse
import sys

import structlog
import trio

from typha import __version__
from typha.config import ConfigError, load_config


def _load(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    try:
        return load_config(config_file=args.config_file)
    except ConfigError as exc:
        print(f"typha: invalid configuration: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_serve(args: argparse.Namespace) -> int:
    from typha import logs, preflight
    from typha.app import serve

    cfg = _load(args)
    try:
        preflight.check(cfg)
    except preflight.StartupError as exc:
        print(f"typha: cannot start: {exc}", file=sys.stderr)
        return 2
    logs.configure_from(cfg)
    for warning in cfg.warnings:
        structlog.get_logger().warning(
            "invalid config value replaced by its default", detail=warning
        )
    try:
        trio.run(serve, cfg)
    except (OSError, BaseExceptionGroup) as exc:
        # What the checks above could not foresee (a port taken in between, say): one line.
        leaf = _first_leaf(exc)
        if not isinstance(leaf, OSError):
            raise
        structlog.get_logger().error("cannot run", error=str(leaf))
        print(f"typha: cannot run: {leaf}", file=sys.stderr)
        return 1
    finally:
        logs.flush()
    return 0


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def cmd_check_config(args: argparse.Namespace) -> int:
    from typha.config import no_effect_settings

    cfg = _load(args)
    for warning in cfg.warnings:
        print(f"typha: warning: {warning}", file=sys.stderr)
    for name, reason in no_effect_settings(cfg):
        print(f"typha: warning: {name} has no effect: {reason}", file=sys.stderr)
    rows = cfg.describe()
    width = max(len(r[0]) for r in rows)
    vwidth = min(40, max(len(r[1]) for r in rows))
    for name, value, source in rows:
        print(f"{name:<{width}}  {value:<{vwidth}}  {source}")
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    print(f"typha-py {__version__}")
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    from typha.writer import run_write

    cfg = _load(args)
    return trio.run(run_write, cfg, args.filename, args.cmd == "delete")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="typha", description="Typha-style fan-out sync proxy for Calico-style networking."
    )
    parser.add_argument(
        "-c",
        "--config-file",
        default=None,
        help="config file (default /etc/calico/typha.cfg; env TYPHA_* wins over it)",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("serve", help="run the sync server")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("check-config", help="print the effective config and each value's source")
    p.set_defaults(func=cmd_check_config)
    p = sub.add_parser("version", help="print the version")
    p.set_defaults(func=cmd_version)
    for name, what in (("apply", "write"), ("delete", "delete")):
        p = sub.add_parser(name, help=f"{what} Calico v3 resources in the configured datastore")
        p.add_argument("-f", "--filename", required=True, help="YAML/JSON file or directory")
        p.set_defaults(func=cmd_apply)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
