"""report.render on metrics built by the real evaluation code: every label that comes from data is drawn as typed,
a page that cannot draw its plots still renders (and says why), and the page is self-contained."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedloop.training import counterfactual
from feedloop.training import evaluate
from feedloop.promotion import gate
from feedloop.training import report

pytestmark = pytest.mark.filterwarnings("ignore:Glyph:UserWarning")  # hypothesis draws characters no font has

SEGMENTS = ("tenant_id", "surface")
LIST = 5


def columns(tenants: list[str], lists: int = 40, seed: int = 3) -> dict[str, np.ndarray]:
    """lists of LIST rows; list i belongs to tenants[i % len(tenants)]."""
    rng = np.random.default_rng(seed)
    n = lists * LIST
    list_id = np.repeat(np.arange(lists), LIST)
    label = rng.integers(0, 4, n)
    return {"request_id": np.array([f"r{i}" for i in list_id]), "label": label, "label_binary": (label > 0).astype(int),
            "weight": np.ones(n), "explore": np.repeat(np.arange(lists) % 3 == 0, LIST),
            "tenant_id": np.array(tenants, dtype=object)[list_id % len(tenants)].astype(str),
            "surface": np.array(["feed", "search"])[(list_id // 2) % 2], "item_popularity": rng.random(n)}


def inputs(tenants: list[str], *, feature: str = "f_quality", version: str = "2026-11-05-cand") -> dict:
    """render()'s arguments for a candidate and a champion scored on the same rows, as promotion builds them."""
    cols = columns(tenants)
    rng = np.random.default_rng(5)
    scores = {"candidate": rng.random(len(cols["label"])), "champion": rng.random(len(cols["label"])),
              "popularity": cols["item_popularity"]}
    metrics = {name: evaluate.evaluate(columns=cols, score=s, segments=SEGMENTS).to_dict()
               for name, s in scores.items()}
    metrics["champion"]["version"] = "2026-11-04-champ"
    boot = counterfactual.Bootstrap(resamples=50, confidence=0.95, seed=1)
    found = counterfactual.evaluate(columns=cols, scores=scores, segments=SEGMENTS, bootstrap=boot,
                                    paired=("candidate", "champion"))
    for name, blocks in found.scorers.items():
        metrics[name].update(blocks)
    metrics.update(paired={**boot.to_dict(), **found.paired}, bootstrap=boot.to_dict(), estimates={},
                   feature_importance={feature: 3.0, "f_noise": 1.0},
                   calibration=evaluate.calibration(score=scores["candidate"], binary=cols["label_binary"]),
                   holdout={"rows": len(cols["label"]), "lists": 40},
                   parity={"max_abs_diff": 1e-6, "rows": 8, "threshold": 1e-5})
    limits = gate.Thresholds(floors={"auc": 0.0}, compare=("ndcg@10",), tolerance=1.0, segment_tolerance=1.0,
                             min_support=1, parity_max_abs_diff=1e-5)
    decision = gate.decide({"version": version, **{k: metrics["candidate"][k] for k in ("overall", "segments",
                                                                                        "debiased")},
                            "parity": metrics["parity"]}, metrics["champion"], limits, paired=metrics["paired"])
    return {"version": version, "metrics": metrics, "gate": decision.to_dict(),
            "manifest": {"lineage": {"window_start": "2026-10-29", "window_end": "2026-11-06"}},
            "history": [{"version": "2026-11-03-$x$", "overall": {"auc": 0.6}}]}


def test_a_tenant_id_matplotlib_reads_as_math_is_drawn_as_typed():
    page = report.render(**inputs(["x$^$y", "acme"])).decode()
    assert page.count("data:image/png;base64,") == 5
    assert "tenant_id=x$^$y" in page and "could not be drawn" not in page


@pytest.mark.parametrize("where", [
    pytest.param({"tenants": ["a$\\frac{1}{0}$", "b"]}, id="segment-value"),
    pytest.param({"tenants": ["acme", "b"], "feature": "f_$\\notacommand$"}, id="feature-name"),
    pytest.param({"tenants": ["acme", "b"], "version": "2026-11-05-$^$"}, id="version-id"),
])
def test_every_label_from_data_is_literal(where):
    kwargs = {k: v for k, v in where.items() if k != "tenants"}
    page = report.render(**inputs(where["tenants"], **kwargs)).decode()
    assert page.count("data:image/png;base64,") == 5 and "could not be drawn" not in page


def test_a_plot_that_fails_says_so_and_the_page_still_renders(monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("no backend today")

    monkeypatch.setattr(report, "_history_plot", broken)
    page = report.render(**inputs(["acme", "globex"])).decode()
    assert "Metric history" in page and "could not be drawn" in page and "ValueError: no backend today" in page
    assert page.count("data:image/png;base64,") == 4  # the other plots are still there


def test_a_report_that_cannot_render_becomes_a_page_that_says_why():
    broken = {**inputs(["acme", "globex"]), "metrics": {"candidate": {}}}
    with pytest.raises(KeyError):
        report.render(**broken)
    page = report.page(**broken).decode()
    assert "The report could not be rendered: KeyError: &#x27;overall&#x27;" in page and "2026-11-05-cand" in page
    assert report.page(**inputs(["acme", "globex"])) == report.render(**inputs(["acme", "globex"]))


def test_the_page_declares_a_policy_that_allows_only_its_own_style_and_inline_images():
    import base64
    import hashlib

    page = report.render(**inputs(["acme", "globex"])).decode()
    (style,) = re.findall(r"<style>(.*?)</style>", page, flags=re.S)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    (policy,) = re.findall(r"<meta http-equiv='Content-Security-Policy' content=\"([^\"]+)\">", page)
    assert policy == f"default-src 'none'; img-src data:; style-src 'sha256-{digest}'; base-uri 'none'; " \
                     "form-action 'none'"
    assert " style=" not in page, "a style attribute needs 'unsafe-inline'"


def test_the_page_loads_nothing_from_elsewhere():
    page = report.render(**inputs(["acme", "<script>alert(1)</script>"])).decode()
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*['"](?!data:image/png;base64,)""", page), "only inline images"
    assert "@import" not in page and "url(" not in page and "@font-face" not in page
    assert "&lt;script&gt;" in page


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tenants=st.lists(st.text(min_size=1, max_size=12), min_size=2, max_size=3, unique=True),
       feature=st.text(min_size=1, max_size=12).filter(lambda f: f != "f_noise"))
def test_any_segment_value_or_feature_name_gives_a_page_with_its_plots(tenants, feature):
    page = report.render(**inputs(tenants, feature=feature)).decode()
    assert page.startswith("<!doctype html>") and "could not be drawn" not in page


def test_the_interval_plot_draws_the_tolerance_the_gate_judged_with():
    """With promotion.tolerance_widths the overall tolerance is the interval's, not the configured cap."""
    case = inputs(["acme"])
    paired = case["metrics"]["paired"]["debiased"]["overall"]["ndcg@10"]
    capped = gate.Thresholds(floors={}, compare=("ndcg@10",), tolerance=1.0, tolerance_widths=0.5, min_support=1)
    decision = gate.decide({"version": "c", **{k: case["metrics"]["candidate"][k] for k in ("overall", "segments",
                                                                                        "debiased")},
                            "parity": case["metrics"]["parity"]}, case["metrics"]["champion"], capped,
                           paired=case["metrics"]["paired"]).to_dict()
    assert report.judged_tolerance(decision, "ndcg@10") == pytest.approx((paired["high"] - paired["low"]) / 4)
    assert report.judged_tolerance(case["gate"], "ndcg@10") == 1.0
    assert report.judged_tolerance({"thresholds": {"tolerance": 0.025}}, "ndcg@10") == 0.025  # a first model
