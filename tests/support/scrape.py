"""Scraping a ``/metrics`` endpoint in tests: raw HTTP over Trio, parsed by prometheus-client."""

from __future__ import annotations

import trio
from prometheus_client.parser import text_string_to_metric_families


async def scrape_text(address: str, path: str = "/metrics", timeout_s: float = 5.0) -> str:
    """The body of ``GET path`` at ``host:port`` (asserts a 200)."""
    host, _, port = address.rpartition(":")
    with trio.fail_after(timeout_s):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            await stream.send_all(request.encode())
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return body.decode()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """(sample name, labels) → value of every sample in a text exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, frozenset(s.labels.items())] = s.value
    return out


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """The one sample named ``name`` whose labels include ``labels`` (0 when none)."""
    hits = [v for (n, ls), v in found.items() if n == name and set(labels.items()) <= set(ls)]
    assert len(hits) <= 1, (name, labels, hits)
    return hits[0] if hits else 0.0
