"""promotion.compare_days: the gate compares on the exploration lists of the holdout's last days only."""

from __future__ import annotations

import numpy as np

from feedloop.core.config import load_settings
from feedloop.promotion.steps import judge, recent_days


def _holdout() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """60 exploration lists of 2 rows on each of 3 days: the candidate puts the clicked row first on the last
    day (2026-12-03) and second on the two days before; the champion the other way round."""
    days, first_clicked = [], []
    for day, candidate_right in (("2026-12-01", False), ("2026-12-02", False), ("2026-12-03", True)):
        for _ in range(60):
            days += [day, day]
            first_clicked.append(candidate_right)
    n = len(days)
    label = np.zeros(n, dtype=np.int64)
    label[0::2] = 1  # the first row of each list is clicked
    right = np.repeat(np.array(first_clicked), 2)
    candidate = np.where(right, np.tile([2.0, 1.0], n // 2), np.tile([1.0, 2.0], n // 2))
    columns = {"request_id": np.repeat(np.arange(n // 2), 2).astype(str), "label": label,
               "label_binary": label, "weight": np.ones(n), "explore": np.ones(n, dtype=bool),
               "day": np.array(days, dtype="datetime64[D]"),
               **{segment: np.array(["a"] * n) for segment in _settings(0).segments}}
    return columns, {"candidate": candidate, "champion": 3.0 - candidate}


def _settings(days: int):
    return load_settings(environ={"FEEDLOOP_PROMOTION__COMPARE_DAYS": str(days),
                                  "FEEDLOOP_PROMOTION__BOOTSTRAP_RESAMPLES": "200"}).promotion


def test_the_last_days_decide_and_the_reason_names_them():
    columns, scored = _holdout()
    _, whole = judge(columns, scored, _settings(0))
    _, last = judge(columns, scored, _settings(1))
    diff = {name: p["explore"]["overall"]["ndcg@10"]["value"] for name, p in (("whole", whole), ("last", last))}
    assert diff["whole"] < 0 < diff["last"]  # two old days against one new: the window's mean favours the champion
    assert last["explore"]["overall"]["lists"] == 60 and whole["explore"]["overall"]["lists"] == 180
    assert last["judged_on"] == "exploration lists of the last 1 day, plain metrics (60 judged)"
    assert judge(columns, scored, _settings(2))[1]["judged_on"].startswith("exploration lists of the last 2 days")


def test_too_few_lists_in_the_last_days_fall_back_to_all_lists():
    columns, scored = _holdout()
    cfg = _settings(1).model_copy(update={"min_support": 61})
    assert judge(columns, scored, cfg)[1]["gated"] == "debiased"
    assert recent_days(columns, 2).sum() == 240


def test_a_holdout_without_days_is_judged_on_the_whole_window_and_the_reason_says_so():
    """A training set built before the day column existed (a backfill of an old day): the gate still decides."""
    columns, scored = _holdout()
    _, whole = judge(columns, scored, _settings(0))
    _, undated = judge({k: v for k, v in columns.items() if k != "day"}, scored, _settings(1))
    assert undated["explore"]["overall"]["lists"] == 180
    assert undated["explore"]["overall"]["ndcg@10"]["value"] == whole["explore"]["overall"]["ndcg@10"]["value"]
    assert undated["judged_on"] == ("exploration lists, plain metrics (180 judged) "
                                    "(the whole window: the holdout has no day column)")
