"""`make demo`: the closed loop on the embedded stack, one simulated day at a time, then what happened.

Each day: the simulated users get their feeds from two serving pods (the legacy policy while no
model is live), the pods log the impressions and the simulator the outcomes; `ingest_engagement`
lands them in the lake; `retrain_ranker` for that day validates, builds, trains, evaluates,
exports, gates, registers and flips; the pods load the new version before the next day starts.

Why one triggered run per day instead of catchup: day d + 1's traffic depends on day d's model, so
no retrain may run before its day was served. The demo's Airflow parses `retrain_ranker` with no
schedule (retrain.schedule null): nothing runs by itself, and the demo triggers each day's run
through the REST API with its logical date, like an external scheduler would. (With a daily
schedule and catchup off, unpausing would at once run the latest simulated day, whose traffic
does not exist yet; a paused DAG starts no run at all.)
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import orjson

from feedloop.ops import inventory
from feedloop.ops import learning_curve
from feedloop.ops import loop_audit
from feedloop.ops import loop_table
from feedloop.ops import simulate
from feedloop.ops.simulate import pools
from feedloop.ops import stack
from feedloop.ops.airflow_api import AirflowApi
from feedloop.core.config import Settings
from feedloop.serving.client import RankingClient
from feedloop.promotion.registry import Registry
from feedloop.serving.pods import Pods
from feedloop.ops.stack.services import AirflowService

RETRAIN, INGEST = "retrain_ranker", "ingest_engagement"
PODS = 2
POLL_INTERVAL_S = "2"  # pods check live.json this often (default 5 s): a flip reaches them within seconds
STATE_FILE = "demo_closed_loop.json"
TABLE_FILE, CURVE_FILE = "demo_table.json", "demo_learning_curve.png"  # in the state folder, next to each other
LANDED_SHARE = 0.95  # of the events a day sent, the lake must hold this share before the day is trained on


@dataclass
class DemoState:
    """What the demo already did on this stack (days simulated, their figures), so a re-run resumes
    where it stopped instead of re-sending a day's events."""

    path: Path
    start: date
    days: int
    seed: int                                                 # the simulated world's (simulate.seed)
    simulated: dict[str, dict] = field(default_factory=dict)  # day -> DayStats fields + events produced

    @classmethod
    def load(cls, settings: Settings, days: int | None, seed: int | None = None) -> DemoState:
        """The stack's demo state; refuses other days or another world seed than the stack ran with
        (its lake holds that world's traffic: mixing two worlds would make every figure meaningless)."""
        path = settings.state_path / STATE_FILE
        if (settings.state_path / "demo_simulated.json").exists():
            raise stack.StackError(f"{settings.state_path} holds traffic of the earlier open-loop demo; "
                                   "`make clean` to start over with the closed loop")
        if path.exists():
            doc = orjson.loads(path.read_bytes())
            ran_seed = doc.get("seed", settings.simulate.seed)  # written before --seed: the configured one
            if days not in (None, doc["days"]) or seed not in (None, ran_seed):
                raise stack.StackError(f"this stack ran the demo for {doc['days']} days from {doc['start']} with "
                                       f"world seed {ran_seed}; `make clean` to run it for "
                                       f"{days or doc['days']} days with seed {ran_seed if seed is None else seed}")
            return cls(path, date.fromisoformat(doc["start"]), doc["days"], ran_seed, doc["simulated"])
        days = days or settings.simulate.days
        return cls(path, datetime.now(timezone.utc).date() - timedelta(days=days), days,
                   settings.simulate.seed if seed is None else seed)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(orjson.dumps({"start": str(self.start), "days": self.days, "seed": self.seed,
                                            "simulated": self.simulated}, option=orjson.OPT_INDENT_2))


def closed_loop_settings(settings: Settings, start: date) -> tuple[Settings, dict[str, str]]:
    """The platform's history starts with the simulated traffic; retrain_ranker runs only when triggered.

    The demo's settings, and the same as FEEDLOOP_* variables for the processes it starts (the Airflow that
    parses retrain_ranker and runs its tasks, the pods): given to them explicitly, this process's
    environment is left alone."""
    retrain = settings.retrain.model_copy(update={"start_date": start, "schedule": None})
    env = {"FEEDLOOP_RETRAIN__START_DATE": start.isoformat(), "FEEDLOOP_RETRAIN__SCHEDULE": "null"}
    return settings.model_copy(update={"retrain": retrain}), env


def airflow_api(settings: Settings) -> AirflowApi:
    service = AirflowService(settings)
    return AirflowApi.for_standalone(service.url, service.password_file())


def without_airflow(settings: Settings) -> Settings:
    return settings.model_copy(update={"stack": settings.stack.model_copy(update={"embedded_airflow": False})})


class AirflowStart:
    """Airflow takes about a minute to start, and nothing needs it before the first day's ingest: it comes up
    on a thread while the pods start and serve that day. Its start-up lines are echoed when it is needed."""

    def __init__(self, settings: Settings, env: dict[str, str], start: date):
        self.settings, self.start, self.lines = settings, start, []
        self._api: AirflowApi | None = None
        self._future = ThreadPoolExecutor(max_workers=1, thread_name_prefix="airflow-start").submit(
            stack.up, settings, echo=self.lines.append, env=env)

    def services(self, echo: Callable[[str], None]) -> list[stack.ServiceStatus]:
        """The whole stack's status once Airflow is up; a failed start raises here, naming its log."""
        statuses = self._future.result()
        for line in self.lines:
            if "already running" not in line:  # S3 and Kafka, started before it
                echo(line)
        self.lines.clear()
        return statuses

    def ready(self, echo: Callable[[str], None]) -> AirflowApi:
        if self._api is None:
            self.services(echo)
            api = airflow_api(self.settings)
            check_triggered_only(api, self.start)
            api.unpause(RETRAIN)  # a paused DAG starts no queued run; with no schedule it creates none by itself
            self._api = api
        return self._api


def check_triggered_only(api: AirflowApi, start: date) -> None:
    """Refuse an Airflow that parsed retrain_ranker with a schedule or another start: it would run days by itself."""
    api.wait_for_dag(RETRAIN)
    details = api.dag_details(RETRAIN)
    schedule, started = details.get("timetable_summary"), str(details.get("start_date") or "")
    if schedule not in (None, "None") or not started.startswith(str(start)):
        raise stack.StackError(
            f"the running Airflow parsed {RETRAIN} with schedule {schedule!r} from {started[:10] or '?'}; the closed "
            f"loop needs it triggered only, from {start} (it was started without the demo's settings, e.g. by "
            "`make up`): `make down && make demo`")


def run_dag(api: AirflowApi, dag_id: str) -> str:
    """Trigger a DAG run through the REST API and wait; a failed run stops the demo with its id."""
    api.wait_for_dag(dag_id)
    api.unpause(dag_id)
    run_id = api.trigger(dag_id)
    state = api.wait(dag_id, run_id)
    if state != "success":
        raise RuntimeError(f"{dag_id} run {run_id} {state}; see its task logs in the Airflow UI")
    return run_id


def simulate_day(settings: Settings, sim: simulate.Simulator, client: RankingClient, d: int,
                 echo: Callable[[str], None]) -> dict:
    """One day of traffic through the pods; the simulator produces outcomes (and legacy impressions)."""
    day = sim.start + timedelta(days=d)
    report = simulate.SimulationReport(start=day, days=1)
    dropped = client.dropped()
    t0 = time.perf_counter()
    sent = simulate.produce(settings, iter(sim.day_records(d, report)))
    client.drain()
    dropped = client.dropped() - dropped
    stats = report.per_day[str(day)]
    served = ", ".join(f"{v} {n:,}" for v, n in sorted(stats.by_version.items()))
    echo(f"   {stats.lists:,} feeds served ({served}); {report.pod_impressions:,} impressions logged by the pods, "
         f"{sent:,} events by the simulator, in {time.perf_counter() - t0:.1f}s; online CTR {stats.ctr:.3f}, "
         f"true NDCG@10 {stats.ndcg:.3f}")
    for name, arm in sorted(stats.arms.items()):
        echo(f"   {name} arm: {arm.lists:,} lists; against each user's best 10 items of the catalog: true NDCG@10 "
             f"{arm.catalog_ndcg:.3f}, best-10 recall {arm.best_recall:.3f}")
    if dropped:
        echo(f"   WARNING: the pods dropped {dropped:,} impression events (see feedloop_impressions_dropped_total); "
             "their outcomes have no impression and validation will flag them")
    return {**asdict(stats), "events": sent, "pod_impressions": report.pod_impressions, "pod_dropped": dropped}


def check_landed(day: date, landed: int, served: dict) -> None:
    """Stop the loop when the lake holds clearly fewer of a day's events than the simulator and the pods sent.

    Why: the day's retrain would train and be judged on part of the day, and every figure after it would mean
    nothing. Seen on 2026-12-06 (bench/loop.py at eight times the traffic, day 19 of 21): the embedded broker
    answered fetches with nothing while it reported the records, the ingest run stopped at
    ingest.max_run_seconds, and the day had 92,422 of its 186,737 events in the lake. A share, not equality:
    a few of a day's events land in its neighbours (outcomes after midnight, late arrivals)."""
    sent = int(served.get("events", 0)) + int(served.get("pod_impressions", 0))
    if sent and landed < LANDED_SHARE * sent:
        raise RuntimeError(
            f"{INGEST} landed {landed:,} of the {sent:,} events sent on {day} ({landed / sent:.0%}; the loop needs "
            f"{LANDED_SHARE:.0%} before it trains on a day): the rest was not fetched from Kafka (the run's log says "
            "'the log holds records past this run's position' when the broker answers fetches with nothing). Run "
            "the same command again: it resumes at this day and runs the ingest again. If it stops here again, "
            "the broker is overloaded: start over on a fresh stack (`make down`, then remove the state folder)")


def retrain_day(api: AirflowApi, day: date, *, timeout: float = 1800) -> dict:
    """retrain_ranker for `day` (its data interval is the day), triggered once per stack; its outcome."""
    run_id = f"closed_loop__{day}"
    if api.dag_run(RETRAIN, run_id) is None:
        interval = tuple(f"{d}T00:00:00+00:00" for d in (day, day + timedelta(days=1)))
        api.trigger(RETRAIN, run_id=run_id, logical_date=interval[0], data_interval=interval)
    state = api.wait(RETRAIN, run_id, timeout=timeout)
    tasks = {t["task_id"]: t["state"] for t in api.task_instances(RETRAIN, run_id)}
    row = {"day": str(day), "run": state, "run_id": run_id, "tasks": tasks}
    for task in ("evaluate", "gate", "flip"):
        if tasks.get(task) == "success":
            row[task] = api.xcom(RETRAIN, run_id, task)
    return row


def run(settings: Settings, *, days: int | None = None, seed: int | None = None,
        echo: Callable[[str], None] = print) -> dict:
    """The closed loop for `days` days (default simulate.days) in the world of `seed` (default simulate.seed)."""
    t0 = time.perf_counter()
    state = DemoState.load(settings, days, seed)
    start, days = state.start, state.days
    settings, child_env = closed_loop_settings(settings, start)
    echo("== 1. embedded stack (Airflow starts in the background while the pods serve the first day)")
    stack.up(without_airflow(settings), echo=echo, env=child_env)
    airflow = AirflowStart(settings, child_env, start)
    echo(f"== 2. {PODS} serving pods (they poll ranker/live.json every {POLL_INTERVAL_S}s)")
    pods = Pods(settings, port=settings.serving.port, replicas=PODS,
                env={**stack.settings_env(settings), **child_env,
                     "FEEDLOOP_SERVING__POLL_INTERVAL_S": POLL_INTERVAL_S,
                     "FEEDLOOP_SERVING__SIMULATED_TIME": "true"})  # the users' clock is the simulated day's
    pods.start()
    echo(f"   {', '.join(pods.urls)}: serving {pods.versions()} (None: no model yet -> 503, legacy policy)")
    client = RankingClient(pods.urls)
    share = settings.simulate.recommend_share  # the two-stage arm: pods choose from the whole catalog
    sim = simulate.Simulator(settings, start=start, days=days, events_per_day=settings.simulate.events_per_day,
                             seed=state.seed, ranker=client.rank, recommender=client.recommend if share else None,
                             recommend_share=share)
    simulate.write_catalog(settings, sim)
    sim.world.save(settings.state_path / "ground_truth.json", start=start, ids=sim.ids)
    registry = Registry.from_settings(settings)
    echo(f"== 3. closed loop, {days} days from {start}, world seed {state.seed}: serve -> ingest -> retrain "
         "(validate, build, train, evaluate, export, gate, register, flip) -> pods load the new model")
    if share:
        echo(f"   {share:.0%} of the requests ask POST /recommend (retriever + ranker over the whole catalog) once a "
             "retriever is live, the rest POST /rank over the feed service's candidates (simulate.recommend_share)")
    rows = []
    try:
        for d in range(days):
            day = start + timedelta(days=d)
            echo(f"-- {day} (day {d + 1}/{days})")
            if str(day) in state.simulated:
                echo("   traffic already simulated on this stack (resuming)")
            else:
                live = registry.live()
                if live is not None:  # the day is served by the model live now, on every pod
                    echo(f"   pods serve {live.version} (live) after {pods.wait_for(live.version, timeout=180):.1f}s")
                state.simulated[str(day)] = simulate_day(settings, sim, client, d, echo)
                sim.pools[str(day)].save(pools.path_for(settings.state_path, str(day)))
                state.save()
            api = airflow.ready(echo)
            run_dag(api, INGEST)
            landed = inventory.day_inventory(settings, day).rows
            echo(f"   {INGEST}: {landed:,} events of {day} in the lake")
            check_landed(day, landed, state.simulated[str(day)])
            retrain = retrain_day(api, day)
            echo(f"   {RETRAIN} {retrain['run_id']}: {loop_table.outcome(retrain)}")
            pools_path = pools.path_for(settings.state_path, str(day))
            audit = loop_audit.audit_day(settings=settings, day=day, world=sim.world, ids=sim.ids, retrain=retrain,
                                         pools=pools.DayPools.load(pools_path) if pools_path.exists() else None)
            if audit is not None and not audit.lists:
                echo("   ground truth: not judged (no candidate pools kept, or no feature snapshot served that day: "
                     "the first model's day)")
            elif audit is not None:
                cand, champ = (loop_table.num(v) for v in (audit.candidate_ndcg, audit.champion_ndcg))
                echo(f"   ground truth on the day's {audit.lists:,} candidate pools: candidate {cand}, "
                     f"champion {audit.champion or '-'} {champ}; gate {audit.decision or 'did not decide'}: "
                     f"{audit.agreement or 'n/a'}")
            rows.append({"day": str(day), "stats": state.simulated[str(day)], "retrain": retrain,
                         "audit": None if audit is None else asdict(audit)})
    finally:
        client.close()
    services = airflow.services(echo)
    live = registry.live()
    seconds = round(time.perf_counter() - t0, 1)
    echo(f"== closed loop, {days} days in {seconds}s")
    for line in loop_table.table(rows):
        echo("   " + line)
    echo("   " + loop_table.summary(rows))
    echo("   " + loop_table.agreement_summary(rows))
    echo(f"   live now: {live.version if live else 'no model'}")
    result = {"start": str(start), "days": days, "seed": state.seed, "pods": pods.urls, "table": rows,
              "live": live.version if live else None, "seconds": seconds}
    table_path, curve_path = write_results(settings, result)
    echo(f"   learning curve         {curve_path}")
    echo(f"   the table as JSON      {table_path}")
    echo("== where to look")
    for s in services:
        for key, value in s.details.items():
            echo(f"   {s.title:<22} {key:<10} {value}")
    echo(f"   serving pods           {', '.join(pods.urls)}  (POST /rank, POST /recommend, GET /version, /metrics)")
    echo(f"   ground truth           {settings.state_path / 'ground_truth.json'}")
    echo(f"   validation reports     s3://{settings.s3.lake_bucket}/validation/dt=<day>/index.html")
    echo(f"   model versions         s3://{settings.s3.models_bucket}/ranker/versions/ (report.html each); "
         "`feedloop model list`")
    echo(f"   retriever versions     s3://{settings.s3.models_bucket}/retriever/versions/; "
         "`feedloop model list --kind retriever`")
    echo("   stop everything with   make down")
    return {**result, "table_json": str(table_path), "learning_curve": str(curve_path)}


def write_results(settings: Settings, result: dict) -> tuple[Path, Path]:
    """The run's table as JSON and its learning curve as PNG, side by side in the stack's state folder."""
    table_path, curve_path = settings.state_path / TABLE_FILE, settings.state_path / CURVE_FILE
    table_path.parent.mkdir(parents=True, exist_ok=True)
    table_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    title = (f"closed loop from {result['start']}, {result['days']} days, world seed {result['seed']}: "
             "ground-truth NDCG@10 served")
    learning_curve.plot(days=loop_table.curve_days(result["table"]), path=curve_path, title=title)
    return table_path, curve_path
