"""A real Prometheus (Debian's `prometheus` package) scraping loopback targets every second.

Used to prove that the metrics our processes export are scrapeable and mean what the docs say,
through PromQL rather than by parsing the text format ourselves.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from tests.peers.ports import LOOPBACK, free_port
from tests.peers.process import PeerError, PeerProcess, find_binary, loopback_client


def find_prometheus() -> str | None:
    """$TYPHA_PROMETHEUS_BIN, else `prometheus` on PATH (apt package)."""
    return find_binary("TYPHA_PROMETHEUS_BIN", None, "prometheus")


class PrometheusServer(PeerProcess):
    """Prometheus with a generated config, random loopback port and temp TSDB."""

    name = "prometheus"
    startup_timeout = 30.0

    def __init__(
        self,
        targets: Sequence[str] | Mapping[str, Sequence[str]] = (),
        *,
        scrape_interval: str = "1s",
        metrics_path: str = "/metrics",
        binary: str | None = None,
        startup_timeout: float | None = None,
    ):
        """`targets` is a list of "127.0.0.1:port" (job "typha-test") or {job: [targets]}."""
        super().__init__(startup_timeout=startup_timeout)
        found = binary or find_prometheus()
        if not found:
            raise PeerError("no prometheus binary: run scripts/setup-system.sh (apt prometheus)")
        self.binary = found
        self.jobs: dict[str, list[str]] = (
            {job: list(t) for job, t in targets.items()}
            if isinstance(targets, Mapping)
            else {"typha-test": list(targets)}
        )
        self.scrape_interval = scrape_interval
        self.metrics_path = metrics_path
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def config_path(self) -> str:
        return str(self.tmpdir / "prometheus.yml")

    def _prepare(self) -> None:
        config = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": [
                {
                    "job_name": job,
                    "metrics_path": self.metrics_path,
                    "static_configs": [{"targets": targets}],
                }
                for job, targets in self.jobs.items()
            ],
        }
        (self.tmpdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))

    def _command(self) -> list[str]:
        return [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.tmpdir / 'tsdb'}",
            f"--web.listen-address={LOOPBACK}:{self.port}",
            "--log.level=warn",
        ]

    def _is_healthy(self) -> bool:
        with loopback_client(timeout=2.0) as c:
            return c.get(f"{self.url}/-/ready").status_code == 200

    def _api(self, path: str, params: dict[str, str] | None = None) -> Any:
        with loopback_client() as c:
            r = c.get(f"{self.url}{path}", params=params)
        body = r.json()
        if r.status_code != 200 or body.get("status") != "success":
            raise PeerError(f"prometheus {path} {params} -> {r.status_code}: {r.text}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; returns the `result` list ({"metric": {...}, "value": [t, "v"]})."""
        data = self._api("/api/v1/query", {"query": expr})
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_value(self, expr: str) -> float | None:
        """The single sample value of `expr`, or None when the result is empty."""
        result = self.query(expr)
        if not result:
            return None
        if len(result) > 1:
            raise PeerError(f"{expr!r} returned {len(result)} series, expected one")
        return float(result[0]["value"][1])

    def wait_for_value(self, expr: str, timeout: float = 15.0) -> float:
        """Poll until `expr` has a value (first scrapes take a scrape interval or two)."""
        deadline = time.monotonic() + timeout
        while (value := self.query_value(expr)) is None:
            if time.monotonic() > deadline:
                raise PeerError(
                    f"no value for {expr!r} after {timeout}s; targets: {self.targets()}"
                )
            time.sleep(0.2)
        return value

    def targets(self) -> list[dict[str, Any]]:
        """Active targets with their health and last scrape error."""
        data = self._api("/api/v1/targets")
        active: list[dict[str, Any]] = data["activeTargets"]
        return active
