"""`typha apply/delete -f` against a real etcd: resources land where Calico stores them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def typha(*args: str, etcd_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TYPHA_ETCDENDPOINTS": etcd_url}
    return subprocess.run(
        [sys.executable, "-m", "typha.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def keys(etcd_url: str, prefix: str) -> list[str]:
    import base64

    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    r = httpx.post(
        f"{etcd_url}/v3/kv/range",
        json={
            "key": base64.b64encode(prefix.encode()).decode(),
            "range_end": base64.b64encode(end.encode()).decode(),
            "keys_only": True,
        },
    )
    return sorted(base64.b64decode(kv["key"]).decode() for kv in r.json().get("kvs", []))


def test_apply_then_delete_the_sample_cluster(etcd_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = etcd_server.client_url
    out = typha("apply", "-f", str(ROOT / "config" / "examples"), etcd_url=url)
    assert out.returncode == 0, out.stderr
    written = keys(url, "/calico/")
    assert "/calico/resources/v3/projectcalico.org/ippools/default-ipv4-ippool" in written
    assert any(k.startswith("/calico/ipam/v2/assignment/ipv4/block/") for k in written)
    assert any("/workloadendpoints/web/" in k for k in written)
    out = typha("delete", "-f", str(ROOT / "config" / "examples"), etcd_url=url)
    assert out.returncode == 0, out.stderr
    assert keys(url, "/calico/") == []


def test_invalid_resource_is_refused_and_nothing_is_written(etcd_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = etcd_server.client_url
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "kind": "List",
                "items": [
                    {
                        "apiVersion": "projectcalico.org/v3",
                        "kind": "IPPool",
                        "metadata": {"name": "ok"},
                        "spec": {"cidr": "10.9.0.0/16"},
                    },
                    {
                        "apiVersion": "projectcalico.org/v3",
                        "kind": "IPPool",
                        "metadata": {"name": "broken"},
                        "spec": {"cidr": "10.9.0.300/16"},
                    },
                ],
            }
        )
    )
    out = typha("apply", "-f", str(bad), etcd_url=url)
    assert out.returncode == 1 and "broken" in out.stderr
    assert keys(url, "/calico/") == []


ALIAS_BOMB = "\n".join(
    [
        "apiVersion: projectcalico.org/v3",
        "kind: GlobalNetworkSet",
        "metadata: {name: bomb}",
        'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]',
    ]
    + [
        f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    ]
    + ["spec: {nets: [], x: *i}"]  # 9^9 = 387 million values once expanded
)


def test_hostile_apply_input_gives_one_line_and_writes_nothing(  # type: ignore[no-untyped-def]
    etcd_server, tmp_path: Path
) -> None:
    url = etcd_server.client_url
    cases = {
        "bomb.yaml": (ALIAS_BOMB, "expands to more than 1,000,000 values"),
        "empty.yaml": ("\n# nothing here\n", "no resources in it"),
        "dup.yaml": (
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: a}\n"
            "spec: {cidr: 10.9.0.0/16}\nspec: {cidr: 10.8.0.0/16}\n",
            "duplicate key 'spec'",
        ),
        "deep.json": (
            '{"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSet", '
            '"metadata": {"name": "deep"}, "spec": {"x": ' + "[" * 3000 + "]" * 3000 + "}}",
            "nested too deep",
        ),
        "deepish.json": (
            '{"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSet", '
            '"metadata": {"name": "deep"}, "spec": {"x": ' + "[" * 150 + "]" * 150 + "}}",
            "nested deeper than 100 levels",
        ),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        out = typha("apply", "-f", str(path), etcd_url=url)
        assert out.returncode == 1, (name, out.stderr)
        assert message in out.stderr and str(path) in out.stderr, (name, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1, (name, out.stderr)
        assert keys(url, "/calico/") == []
    # Positive control: aliases within the limit are fine (calicoctl accepts them too).
    good = tmp_path / "aliases.yaml"
    good.write_text(
        "kind: List\nitems:\n"
        "- {apiVersion: projectcalico.org/v3, kind: GlobalNetworkSet, metadata: {name: ok},\n"
        "   spec: {nets: &nets [10.1.0.0/16]}}\n"
        "- {apiVersion: projectcalico.org/v3, kind: GlobalNetworkSet, metadata: {name: ok2},\n"
        "   spec: {nets: *nets}}\n"
    )
    out = typha("apply", "-f", str(good), etcd_url=url)
    assert out.returncode == 0, out.stderr
    assert len(keys(url, "/calico/resources/v3/projectcalico.org/globalnetworksets/")) == 2
