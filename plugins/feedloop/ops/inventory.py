"""What the lake holds: objects and rows per event-hour partition (from Parquet footers).

Why: operators and the demo need "is yesterday complete?" without scanning the data.
"""

from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date

from feedloop.core import layout as lake
from feedloop.core.config import Settings
from feedloop.core.storage import ObjectStore


@dataclass
class DayInventory:
    day: date
    hours: dict[int, dict[str, int]] = field(default_factory=dict)   # hour -> {"objects": n, "rows": n}

    @property
    def rows(self) -> int:
        return sum(h["rows"] for h in self.hours.values())

    @property
    def objects(self) -> int:
        return sum(h["objects"] for h in self.hours.values())


def day_inventory(settings: Settings, day: date, store: ObjectStore | None = None) -> DayInventory:
    import pyarrow.parquet as pq

    store = store or ObjectStore.from_settings(settings)
    hours: dict[int, dict[str, int]] = defaultdict(lambda: {"objects": 0, "rows": 0})
    for key in store.list_keys(settings.s3.lake_bucket, lake.day_prefix(day)):
        ref = lake.parse_key(key)
        if ref is None or ref.hour is None:
            continue
        body = store.get(settings.s3.lake_bucket, key).body
        hours[ref.hour.hour]["objects"] += 1
        hours[ref.hour.hour]["rows"] += pq.read_metadata(io.BytesIO(body)).num_rows
    return DayInventory(day, dict(sorted(hours.items())))
