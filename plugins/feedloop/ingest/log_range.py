"""Does a checkpoint still fit the Kafka log? Checked for every partition before a sink run reads.

Why: offsets mean something only within one log. After the log is reset (the embedded broker
restarted with memory storage, a topic deleted and recreated) a checkpoint can point past the new
log's end: the sink seeks there, reads nothing and reports success while every new event is
skipped. A checkpoint before the log's start means retention deleted records before they landed.
Either way landing more would be wrong without an operator's decision (`feedloop ingest
reset-checkpoint`), so the run fails, naming the partition, the checkpoint and the log.

The broker's reported end is not trusted to say a checkpoint is too far: Tansu's ListOffsets
answers below the real end (measured: 8,755 for 9,000 records, 1 for 520). Only when it reports
less than the checkpoint is the log read at the checkpoint's last offset to see whether it is there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from feedloop.core.config import KafkaSettings
from feedloop.core.credentials import resolve_kafka
from feedloop.core.streams import consumer
from feedloop.ingest.checkpoint import Checkpoint
from feedloop.ingest.errors import LogMismatch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LogRange:
    partition: int
    start: int          # the first offset still in the log
    end: int            # one past the last offset in it (at least what the broker reports)
    topic_id: str       # Kafka's topic id ("" when the broker reports none)
    reaches: bool       # the log holds an offset at or after (checkpoint.next_offset - 1)

    def describe(self) -> str:
        held = f"offsets {self.start:,}-{self.end - 1:,}" if self.end > self.start else f"no records (next offset {self.end:,})"
        return f"the log holds {held}" + (f" (topic id {self.topic_id})" if self.topic_id else "")


def reset_command(partition: int, to: str = "earliest") -> str:
    return f'feedloop ingest reset-checkpoint --partition {partition} --to {to} --reason "WHY"'


def check(ckpt: Checkpoint, log: LogRange) -> None:
    """Raise LogMismatch, saying what happened and what to do, if `ckpt` does not fit `log`."""
    where = f"{ckpt.topic}[{ckpt.partition}]: the checkpoint says next_offset {ckpt.next_offset:,}"
    keep = "Everything landed so far stays in the lake; nothing was read or written by this run."
    if ckpt.next_offset > 0 and ckpt.topic_id and log.topic_id and ckpt.topic_id != log.topic_id:
        raise LogMismatch(
            f"{where} in topic id {ckpt.topic_id}, but the topic was deleted and recreated (now topic id "
            f"{log.topic_id}) and {log.describe()}: its offsets are not the checkpoint's. {keep} To land the new "
            f"log from its start: {reset_command(ckpt.partition)}")
    if ckpt.next_offset < log.start:
        lost = log.start - ckpt.next_offset
        raise LogMismatch(
            f"{where} but {log.describe()}: {lost:,} offsets ({ckpt.next_offset:,}-{log.start - 1:,}) were deleted "
            f"(retention) before they landed; they are lost. Find out why the sink fell behind the topic's "
            f"retention, then go on from the log's start: {reset_command(ckpt.partition)}")
    if ckpt.next_offset > 0 and not log.reaches:
        raise LogMismatch(
            f"{where} but {log.describe()}: the log was reset (an embedded broker restarted with "
            f"stack.kafka_storage memory, or the topic recreated) and every new event would be skipped. {keep} "
            f"To land the new log from its start: {reset_command(ckpt.partition)}")


def read(kafka: KafkaSettings, topic: str, next_offsets: dict[int, int], *, poll_timeout_ms: int,
         polls: int, exact_end: bool = False) -> dict[int, LogRange]:
    """The log range of each partition, looking at the log where a checkpoint's last offset should be.

    exact_end: read every partition's tail from the reported end, so `end` is the real one (for a record).
    """
    from kafka import TopicPartition

    topic_id = _topic_id(kafka, topic)
    probe = consumer(kafka)
    try:
        tps = {p: TopicPartition(topic, p) for p in next_offsets}
        starts = probe.beginning_offsets(list(tps.values()))
        ends = probe.end_offsets(list(tps.values()))
        start = {p: starts[tp] for p, tp in tps.items()}
        end = {p: ends[tp] for p, tp in tps.items()}
        look = {p: n - 1 for p, n in next_offsets.items() if end[p] < n and n - 1 >= start[p]}
        seen = _last_offsets(probe, tps, look, poll_timeout_ms, polls, first_only=True)
        for p, last in seen.items():
            end[p] = max(end[p], last + 1)
        # the real end where it matters: for the record of a reset, or to say where a short log ends
        tail = dict(end) if exact_end else {p: end[p] for p in look if end[p] < next_offsets[p]}
        for p, last in _last_offsets(probe, tps, tail, poll_timeout_ms, polls).items():
            end[p] = max(end[p], last + 1)
    finally:
        probe.close(autocommit=False)
    return {p: LogRange(p, start[p], end[p], topic_id, next_offsets[p] == 0 or end[p] >= next_offsets[p])
            for p in next_offsets}


def _last_offsets(probe, tps: dict, first: dict[int, int], poll_timeout_ms: int, polls: int, *,
                  first_only: bool = False) -> dict[int, int]:
    """Read each partition from `first[p]` until the polls come back empty (or, `first_only`, until each
    partition returned a record): the last offset seen."""
    if not first:
        return {}
    probe.assign([tps[p] for p in first])
    for p, offset in first.items():
        probe.seek(tps[p], offset)
    last: dict[int, int] = {}
    empty = 0
    while empty < polls and not (first_only and len(last) == len(first)):
        polled = probe.poll(timeout_ms=poll_timeout_ms, max_records=20_000)
        empty = 0 if polled else empty + 1
        for tp, records in polled.items():
            last[tp.partition] = max(last.get(tp.partition, -1), records[-1].offset)
    return last


def _topic_id(kafka: KafkaSettings, topic: str) -> str:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(**resolve_kafka(kafka).kafka_python(), request_timeout_ms=10_000)
    try:
        described = admin.describe_topics([topic])
    finally:
        admin.close()
    found = str(described[0].get("topic_id") or "") if described else ""
    return "" if found.strip("0-") == "" else found  # an all-zero id means "none" in Kafka's protocol


def unread(kafka, *, stop: int | None = None) -> dict[int, int]:
    """Per assigned partition, the offsets between the consumer's position and the log's end (or `stop`, if
    lower), where there are any: what empty polls have not yet returned.

    Why: a busy broker can answer fetches with nothing while it holds records, so empty polls alone are not the
    log's end. If the end offsets cannot be read, nothing is taken as unread (the broker is then as good as
    unreachable): the caller stops at its empty polls, as it always did."""
    from kafka.errors import KafkaError

    assigned = sorted(kafka.assignment(), key=lambda tp: tp.partition)
    try:
        ends = kafka.end_offsets(assigned)
        positions = {tp: kafka.position(tp) for tp in assigned}
    except KafkaError as exc:
        log.warning("could not read the log's end offsets (%s): stopping at the empty polls", exc)
        return {}
    limit = {tp: ends[tp] if stop is None else min(ends[tp], stop) for tp in assigned}
    return {tp.partition: limit[tp] - positions[tp] for tp in assigned if limit[tp] > positions[tp]}
