"""Engine speed and memory: Charter against LangGraph (SqliteSaver) and DBOS (SQLite system database).

Two graphs, the same in every framework: N sequential no-op steps (default 1,000), and a fan-out of M
no-op branches joined at the end (default 100). Every log lives in a real file in a temporary directory.
Reported: wall time per step (the engine's overhead: the steps do nothing), Charter with `--durability
normal` and `full`, LangGraph with durability "sync", DBOS, and the ratios; replay speed (events/s);
peak RSS of a run of 1k and 10k steps, each measured in a fresh subprocess.

    python bench/bench_engine.py [--steps 1000] [--fanout 100] [--rounds 3] [--skip-rss] [--only charter]

Peers are optional (`pip install langgraph langgraph-checkpoint-sqlite dbos`): a missing one is reported
and left out. Numbers depend on the machine and its disk; compare ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import operator
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypedDict

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TOOL_MODULE = "bench.bench_engine"


def noop(i: int = 0) -> int:
    """The Charter tool of every step: does nothing, so the time measured is the engine's."""
    return i


# --- Charter -----------------------------------------------------------------------------------------------


def sequential_yaml(n: int) -> str:
    steps = "\n".join(f"  - {{id: s{k}, tool: noop, args: {{i: {k}}}}}" for k in range(n))
    return _workflow(f"seq-{n}", steps)


def fanout_yaml(m: int) -> str:
    branches = "\n".join(
        f"        b{k}:\n          - {{id: b{k}s, tool: noop, args: {{i: {k}}}}}" for k in range(m)
    )
    return _workflow(f"fan-{m}", f"  - id: fan\n    parallel:\n      branches:\n{branches}")


def loop_yaml(n: int) -> str:
    body = (
        f"  - id: rounds\n    loop:\n      max_iterations: {n}\n      until: index == {n - 1}\n"
        "      steps:\n        - {id: s, tool: noop, args: {i: '${{ index }}'}}"
    )
    return _workflow(f"loop-{n}", body)


def _workflow(name: str, steps: str) -> str:
    return (
        f'charter: "1.0"\nname: {name}\ntools:\n  noop: {{python: "{TOOL_MODULE}:noop", effect: read}}\n'
        f"steps:\n{steps}\n"
    )


class Charter:
    name = "charter"

    def __init__(self, workdir: Path) -> None:
        from dsl.frontend import compile_file
        from interpreter import RunOptions, replay_run, run_workflow
        from interpreter.store import open_store

        self.workdir, self._compile, self._open = workdir, compile_file, open_store
        self._run, self._replay, self._options = run_workflow, replay_run, RunOptions
        self._graphs: dict[str, Any] = {}
        self.compile_ms: dict[str, float] = {}

    def graph(self, key: str, source: str) -> Any:
        if key not in self._graphs:
            path = self.workdir / f"{key}.yaml"
            path.write_text(source, encoding="utf-8")
            t = time.perf_counter()
            graph, diags = self._compile(path)
            self.compile_ms[key] = (time.perf_counter() - t) * 1000
            if graph is None:
                raise SystemExit(f"{key}: does not compile: {[str(d) for d in diags]}")
            self._graphs[key] = graph
        return self._graphs[key]

    def run(self, graph: Any, durability: str, db: Path) -> tuple[float, str, Any]:
        """Seconds for one run; the run id; the store (left open for replay)."""
        store = self._open(db, durability=durability)
        options = self._options(allow_modules=(TOOL_MODULE,), durability=durability)
        t = time.perf_counter()
        result = self._run(graph, {}, store=store, options=options)
        elapsed = time.perf_counter() - t
        if result.status != "completed":
            raise SystemExit(f"charter run {result.status}: {result.error}")
        return elapsed, result.run_id, store

    def replay(self, store: Any, run_id: str) -> tuple[float, int]:
        t = time.perf_counter()
        result = self._replay(run_id, store=store, options=self._options(allow_modules=(TOOL_MODULE,)))
        elapsed = time.perf_counter() - t
        if not result.ok:
            raise SystemExit(f"replay diverged: {result.divergence}")
        return elapsed, result.events_checked


def bench_charter(args: argparse.Namespace, workdir: Path, results: dict[str, Any]) -> None:
    c = Charter(workdir)
    seq, fan = c.graph("seq", sequential_yaml(args.steps)), c.graph("fan", fanout_yaml(args.fanout))
    c.run(c.graph("warm", sequential_yaml(20)), "normal", workdir / "warm.db")[2].close()
    last: tuple[Any, str] | None = None
    for durability in ("normal", "full"):
        seq_times, fan_times = [], []
        for r in range(args.rounds):
            elapsed, run_id, store = c.run(seq, durability, workdir / f"charter-seq-{durability}-{r}.db")
            seq_times.append(elapsed)
            if last is not None:
                last[0].close()
            last = (store, run_id)
            elapsed, _, store = c.run(fan, durability, workdir / f"charter-fan-{durability}-{r}.db")
            fan_times.append(elapsed)
            store.close()
        results[f"charter/{durability}"] = {"seq": min(seq_times), "fan": min(fan_times)}
    assert last is not None
    replays = [c.replay(*last) for _ in range(args.rounds)]
    elapsed, events = min(replays)
    last[0].close()
    results["replay"] = {"events": events, "seconds": elapsed}
    results["compile_ms"] = c.compile_ms


# --- LangGraph ---------------------------------------------------------------------------------------------


class Seq(TypedDict):  # at module level: LangGraph resolves the (string) annotations in module globals
    i: int


class Fan(TypedDict):
    out: Annotated[list[int], operator.add]


def bench_langgraph(args: argparse.Namespace, workdir: Path, results: dict[str, Any]) -> None:
    import sqlite3

    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, START, StateGraph

    def step(state: Seq) -> dict[str, int]:
        return {"i": noop(state["i"]) + 1}

    def sequential(n: int) -> StateGraph:
        g = StateGraph(Seq)
        for k in range(n):
            g.add_node(f"s{k}", step)
            g.add_edge(START if k == 0 else f"s{k - 1}", f"s{k}")
        g.add_edge(f"s{n - 1}", END)
        return g

    def fanout(m: int) -> StateGraph:
        g = StateGraph(Fan)
        g.add_node("join", lambda state: {"out": []})
        for k in range(m):
            g.add_node(f"b{k}", lambda state, k=k: {"out": [noop(k)]})
            g.add_edge(START, f"b{k}")
            g.add_edge(f"b{k}", "join")
        g.add_edge("join", END)
        return g

    def run(graph: StateGraph, initial: dict[str, Any], db: Path, limit: int) -> float:
        conn = sqlite3.connect(db, check_same_thread=False)
        app = graph.compile(checkpointer=SqliteSaver(conn))
        config = {"configurable": {"thread_id": "bench"}, "recursion_limit": limit + 10}
        t = time.perf_counter()
        app.invoke(initial, config, durability="sync")
        elapsed = time.perf_counter() - t
        conn.close()
        return elapsed

    seq, fan = sequential(args.steps), fanout(args.fanout)
    run(sequential(20), {"i": 0}, workdir / "lg-warm.db", 20)
    seq_t = min(run(seq, {"i": 0}, workdir / f"lg-seq-{r}.db", args.steps) for r in range(args.rounds))
    fan_t = min(run(fan, {"out": []}, workdir / f"lg-fan-{r}.db", 3) for r in range(args.rounds))
    results["langgraph/sync"] = {"seq": seq_t, "fan": fan_t}


# --- DBOS --------------------------------------------------------------------------------------------------


def bench_dbos(args: argparse.Namespace, workdir: Path, results: dict[str, Any]) -> None:
    import logging

    from dbos import DBOS

    logging.getLogger("dbos").setLevel(logging.WARNING)

    @DBOS.step()
    def dbos_noop(i: int) -> int:
        return noop(i)

    @DBOS.step()
    async def dbos_anoop(i: int) -> int:
        return noop(i)

    @DBOS.workflow()
    def dbos_sequential(n: int) -> int:
        for k in range(n):
            dbos_noop(k)
        return n

    @DBOS.workflow()
    async def dbos_fanout(m: int) -> list[int]:
        return list(await asyncio.gather(*(dbos_anoop(k) for k in range(m))))

    db = workdir / "dbos.sqlite"
    DBOS(
        config={
            "name": "charter-bench",
            "system_database_url": f"sqlite:///{db}",
            "run_admin_server": False,
            "log_level": "WARNING",
        }
    )
    DBOS.launch()
    try:
        dbos_sequential(20)

        def timed(fn: Callable[[], Any]) -> float:
            t = time.perf_counter()
            fn()
            return time.perf_counter() - t

        seq_t = min(timed(lambda: dbos_sequential(args.steps)) for _ in range(args.rounds))
        fan_t = min(timed(lambda: asyncio.run(dbos_fanout(args.fanout))) for _ in range(args.rounds))
        results["dbos"] = {"seq": seq_t, "fan": fan_t}
    finally:
        DBOS.destroy()


# --- memory ------------------------------------------------------------------------------------------------


def _rss_kb() -> int:
    """Current resident set size (Linux /proc; falls back to the peak elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def rss_child(n: int, workdir: Path) -> None:
    """In a fresh process: RSS after compiling, and the highest RSS sampled while a loop of n steps runs.

    The process's own peak (ru_maxrss) is dominated by imports, so a thread samples the RSS every 5 ms
    during the run instead: what the run itself adds, and whether it grows with the number of steps.
    """
    import threading

    c = Charter(workdir)
    graph = c.graph(f"loop{n}", loop_yaml(n))
    before = _rss_kb()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], _rss_kb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    elapsed, run_id, store = c.run(graph, "normal", workdir / f"rss-{n}.db")
    done.set()
    sampler.join()
    store.close()
    peak[0] = max(peak[0], _rss_kb())
    print(json.dumps({"steps": n, "rss_before_kb": before, "rss_peak_kb": peak[0], "seconds": elapsed}))


def measure_rss(sizes: list[int], workdir: Path) -> list[dict[str, Any]]:
    out = []
    for n in sizes:
        proc = subprocess.run(
            [sys.executable, __file__, "--rss-child", str(n), "--workdir", str(workdir)],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        if proc.returncode != 0:
            print(f"rss at {n} steps failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


# --- the disk's floor ---------------------------------------------------------------------------------------


def bench_commit_floor(workdir: Path, results: dict[str, Any], n: int = 1000) -> None:
    """What committing one step's events costs, without the engine: the store appending the five
    events of a tool step in one transaction, fsynced (full) or not (normal). Under `full` no engine
    can take less per sequential step than one such commit."""
    from interpreter.store import NewEvent, SQLiteEventStore

    step = [
        NewEvent("step.started", "s", {"attempt": 1, "step": "tool"}),
        NewEvent("authz.decided", "s", {"decision": "allow", "grant": "workflow", "args_digest": "0" * 64}),
        NewEvent("tool.called", "s", {"tool": "noop", "args": {"i": 1}, "idempotency_key": "r/s/1"}),
        NewEvent("tool.completed", "s", {"tool": "noop", "result": 1, "duration_ms": 0.01}),
        NewEvent("step.completed", "s", {"attempt": 1, "output": 1, "duration_ms": 0.1}),
    ]
    for durability in ("normal", "full"):
        with SQLiteEventStore(workdir / f"floor-{durability}.db", durability=durability) as store:  # type: ignore[arg-type]
            run_id = store.create_run("floor").run_id
            t = time.perf_counter()
            for _ in range(n):
                store.append_many(run_id, step)
            results[f"commit/{durability}"] = (time.perf_counter() - t) / n


# --- report ------------------------------------------------------------------------------------------------


# What each engine's log file does on commit (read from their sources): equal durability is charter/full.
SYNC_MODES = {
    "charter/normal": "WAL, synchronous=NORMAL (no fsync per commit)",
    "charter/full": "WAL, synchronous=FULL (fsync per commit)",
    "langgraph/sync": "WAL, synchronous=FULL (sqlite3 default), checkpoint written before each next step",
    "dbos": "rollback journal, synchronous=FULL",
}


def report(args: argparse.Namespace, results: dict[str, Any], rss: list[dict[str, Any]]) -> None:
    def ms(seconds: float, n: int) -> float:
        return seconds * 1000 / n

    print(f"\nper-step wall time (ms), best of {args.rounds}; logs in real files")
    print(
        f"{'engine':<18}{f'sequential x{args.steps}':>20}{f'fan-out x{args.fanout}':>18}   SQLite durability"
    )
    for name, mode in SYNC_MODES.items():
        if name in results:
            r = results[name]
            print(f"{name:<18}{ms(r['seq'], args.steps):>20.4f}{ms(r['fan'], args.fanout):>18.4f}   {mode}")
    for mine in ("charter/normal", "charter/full"):
        for peer in ("langgraph/sync", "dbos"):
            if mine in results and peer in results:
                a, b = results[mine], results[peer]
                print(
                    f"{peer} / {mine}: sequential {b['seq'] / a['seq']:.1f}x, fan-out {b['fan'] / a['fan']:.1f}x"
                )
    if "replay" in results:
        r = results["replay"]
        rate = r["events"] / r["seconds"] if r["seconds"] else float("inf")
        print(f"replay: {r['events']} events in {r['seconds'] * 1000:.1f} ms = {rate:,.0f} events/s")
    if "compile_ms" in results:
        print(
            "compile (ms, not counted above): "
            + ", ".join(f"{k} {v:.1f}" for k, v in results["compile_ms"].items())
        )
    for r in rss:
        print(
            f"RSS, loop of {r['steps']:>6} steps: peak during the run {r['rss_peak_kb'] / 1024:.1f} MiB, "
            f"before it {r['rss_before_kb'] / 1024:.1f} MiB (+{(r['rss_peak_kb'] - r['rss_before_kb']) / 1024:.1f}); "
            f"run {r['seconds']:.2f} s"
        )
    if "commit/full" in results:
        full, normal = results["commit/full"] * 1000, results["commit/normal"] * 1000
        print(
            f"one step's events committed by the store alone: full {full:.3f} ms, normal {normal:.3f} ms "
            f"(the fsync: ~{full - normal:.3f} ms on this disk)"
        )
        for peer in ("langgraph/sync", "dbos"):
            if peer in results:
                need = ms(results[peer]["seq"], args.steps) / 5
                print(f"5x {peer} sequential at equal durability needs <= {need:.3f} ms/step in all")
    goal = results.get("charter/normal")
    if goal:
        print(f"goal <= 0.2 ms/step (normal): {'met' if ms(goal['seq'], args.steps) <= 0.2 else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--fanout", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=["charter", "langgraph", "dbos"])
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--rss-sizes", type=int, nargs="*", default=[1000, 10000])
    parser.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, Path(args.workdir))
        return
    os.chdir(REPO)  # the tool module `bench.bench_engine` resolves from the repository root
    results: dict[str, Any] = {}
    rss: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="charter-bench-", dir=REPO / "bench") as tmp:
        workdir = Path(tmp)
        benches = {"charter": bench_charter, "langgraph": bench_langgraph, "dbos": bench_dbos}
        for name, fn in benches.items():
            if args.only and name not in args.only:
                continue
            try:
                fn(args, workdir, results)
            except ImportError as exc:
                print(f"{name}: not installed ({exc.name or exc}); left out", file=sys.stderr)
            print(f"{name}: done", file=sys.stderr)
        if not args.only or "charter" in args.only:
            bench_commit_floor(workdir, results)
        if not args.skip_rss and (not args.only or "charter" in args.only):
            rss = measure_rss(args.rss_sizes, workdir)
    report(args, results, rss)


if __name__ == "__main__":
    main()
