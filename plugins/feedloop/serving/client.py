"""The ranking pods as a client sees them: POST /rank and /recommend round-robin over the pods, the impression drain.

Why a client module: the closed-loop simulator (and anything else that asks the pods for feeds)
must treat the pods as a black box behind HTTP, exactly like a feed service would: it learns the
order, the model version and whether the list was an exploration shuffle from the response, and
a 503 means "no model live yet" (the caller decides what to show instead).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import httpx
import orjson


class RankingError(RuntimeError):
    """A pod could not be reached or answered something other than a ranking or 'no model yet'."""


@dataclass(frozen=True)
class Ranked:
    """One list as a pod returned it: item ids in display order (position = index + 1)."""

    item_ids: list[str]
    model_version: str
    explore: bool
    retriever_version: str | None = None  # set on a /recommend list: the retriever that chose the candidates


class RankingClient:
    """Round-robin over the pods' URLs; keep-alive connections, one per pod."""

    def __init__(self, urls: Sequence[str], *, timeout: float = 10.0):
        if not urls:
            raise RankingError("no serving pod URL given (e.g. --via-serving http://127.0.0.1:8000)")
        self.urls = [u.rstrip("/") for u in urls]
        self._http = [httpx.Client(base_url=u, timeout=timeout) for u in self.urls]
        self._next = 0

    def rank(self, body: dict[str, Any]) -> Ranked | None:
        """The pod's order for a POST /rank body; None when the pod has no model yet (503)."""
        url, resp = self._post("/rank", body)
        if resp.status_code == 503:
            return None
        if resp.status_code != 200:
            raise RankingError(f"serving pod {url} answered POST /rank with {resp.status_code}: {resp.text[:300]}")
        return _ranked(url, orjson.loads(resp.content), body)

    def recommend(self, body: dict[str, Any]) -> Ranked | None:
        """The pod's list for a POST /recommend body (candidates from the whole catalog); None when the pod
        cannot recommend for it yet: no ranker or retriever live (503), or no retriever items of the tenant (404
        naming tenant_id). The caller shows its own candidates to /rank instead, as a feed service would."""
        url, resp = self._post("/recommend", body)
        if resp.status_code == 503 or (resp.status_code == 404 and "tenant_id" in resp.text):
            return None
        if resp.status_code != 200:
            raise RankingError(f"serving pod {url} answered POST /recommend with {resp.status_code}: "
                               f"{resp.text[:300]}")
        return _recommended(url, orjson.loads(resp.content), body)

    def _post(self, path: str, body: dict[str, Any]) -> tuple[str, httpx.Response]:
        i = self._next
        self._next = (i + 1) % len(self.urls)
        url = self.urls[i]
        try:
            return url, self._http[i].post(path, content=orjson.dumps(body),
                                           headers={"content-type": "application/json"})
        except httpx.HTTPError as exc:
            raise RankingError(f"serving pod {url}: {type(exc).__name__}: {exc}; is it running "
                               "(`feedloop serve`, or the URL in --via-serving)?") from None

    def drain(self, *, timeout: float = 120.0) -> None:
        """Wait until every pod has handed its buffered impressions to Kafka.

        Why: the pods log impressions asynchronously; an ingest run started before they are flushed
        would see outcomes whose impressions are still in a pod's buffer.
        """
        deadline = time.monotonic() + timeout
        for url, http in zip(self.urls, self._http):
            while True:
                pending = (_get_json(url, http, "/version").get("impressions") or {}).get("pending", 0)
                if pending == 0:
                    break
                if time.monotonic() > deadline:
                    raise RankingError(f"serving pod {url} still holds {pending} impression events after "
                                       f"{timeout:.0f}s; is Kafka reachable from it (see its log)?")
                time.sleep(0.2)

    def dropped(self) -> int:
        """Impression events the pods dropped since they started (buffer full, Kafka failing), summed."""
        return sum(_dropped(url, http) for url, http in zip(self.urls, self._http))

    def close(self) -> None:
        for http in self._http:
            http.close()


def _ranked(url: str, obj: Any, body: dict[str, Any]) -> Ranked:
    """Check the response against the request: a pod may only reorder (and cut) the candidates."""
    ids, version, explore = _listed(url, obj, "/rank")
    asked = {c["item_id"] for c in body["candidates"]}
    limit = min(body.get("limit") or len(asked), len(asked))
    if not set(ids) <= asked or len(ids) != limit:
        raise RankingError(f"serving pod {url}: the /rank response is not an ordering of the top {limit} of the "
                           f"{len(asked)} candidates sent (request {body.get('request_id')})")
    return Ranked(ids, version, explore)


def _recommended(url: str, obj: Any, body: dict[str, Any]) -> Ranked:
    """Check a /recommend response: at most `limit` distinct items in positions 1..n, both versions named."""
    ids, version, explore = _listed(url, obj, "/recommend")
    retriever = obj.get("retriever_version")
    if not ids or len(ids) > body["limit"] or not isinstance(retriever, str) or not retriever:
        raise RankingError(f"serving pod {url}: the /recommend response for request {body.get('request_id')} "
                           f"lists {len(ids)} items (limit {body['limit']}) with retriever_version {retriever!r}")
    return Ranked(ids, version, explore, retriever)


def _listed(url: str, obj: Any, path: str) -> tuple[list[str], str, bool]:
    """The item ids, model version and explore flag of a list response, checked for shape."""
    try:
        items = obj["items"]
        ids = [it["item_id"] for it in items]
        positions = [it["position"] for it in items]
        version, explore = obj["model_version"], obj["explore"]
    except (KeyError, TypeError) as exc:
        raise RankingError(f"serving pod {url}: a {path} response without {exc}: {str(obj)[:300]}") from None
    if positions != list(range(1, len(ids) + 1)) or len(set(ids)) != len(ids):
        raise RankingError(f"serving pod {url}: the {path} response's positions are not 1..{len(ids)} over "
                           "distinct items")
    if not isinstance(version, str) or not version or not isinstance(explore, bool):
        raise RankingError(f"serving pod {url}: bad model_version / explore in the {path} response: "
                           f"{version!r}, {explore!r}")
    return ids, version, explore


def _get_json(url: str, http: httpx.Client, path: str) -> dict[str, Any]:
    try:
        resp = http.get(path)
        resp.raise_for_status()
        return orjson.loads(resp.content)
    except (httpx.HTTPError, orjson.JSONDecodeError) as exc:
        raise RankingError(f"serving pod {url}: GET {path} failed: {exc}") from None


def _dropped(url: str, http: httpx.Client) -> int:
    """feedloop_impressions_dropped_total of one pod, over every reason."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = http.get("/metrics").text
    except httpx.HTTPError as exc:
        raise RankingError(f"serving pod {url}: GET /metrics failed: {exc}") from None
    return int(sum(s.value for family in text_string_to_metric_families(text)
                   if family.name == "feedloop_impressions_dropped" for s in family.samples
                   if s.name == "feedloop_impressions_dropped_total"))
