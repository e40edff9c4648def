"""CEL speed: Charter's engine against cel-python (`celpy`) and `common-expression-language` (Rust).

Each expression is compiled once per implementation and evaluated many times against the same
bindings, prepared once in each implementation's own value form (a CEL activation is built once per
request in real use too). Before timing, every available implementation must return the same result.

    python bench/bench_cel.py [--seconds 0.3] [--rounds 3] [--only NAME ...] [--checked] [--skip-celpy]

Peers are optional: a missing one is reported and left out.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dsl.expr as charter_cel  # noqa: E402

EXPRESSIONS: dict[str, str] = {
    "arith_int": "request.amount * 2 + 100 > 2000 && request.amount % 7 != 3 && request.amount - 250 <= 1000",
    "arith_double": "double(request.amount) / 100.0 >= 12.5 && request.ratio * 3.0 < 10.0",
    "role_check": "'admin' in request.user.roles || ('editor' in request.user.roles && request.resource.owner == request.user.id)",
    "ownership": "request.resource.org == request.user.org && request.resource.tags.env == 'prod' && has(request.resource.tags.tier) && request.user.level >= 3",
    "all_10": "items10.all(i, i.price > 5.0 && i.status == 'ok')",
    "exists_10": "items10.exists(i, i.qty == 2 && i.id > 5)",
    "all_1000": "items1000.all(i, i.price >= 0.0 && i.status != 'blocked')",
    "exists_1000": "items1000.exists(i, i.id == 999)",
    "strings": "request.path.startsWith('/api/v1/') && request.email.endsWith('@example.com') && request.email.contains('alice')",
    "matches": "request.email.matches('^[a-z]+@[a-z]+\\\\.com$') && request.path.matches('^/api/v[0-9]+/orders/[0-9]+$')",
    "timestamps": "now < expires && expires - now > duration('720h') && now.getFullYear() == 2026",
    "map_filter": "items10.filter(i, i.qty > 0).map(i, i.price * double(i.qty)).size() == 6",
}


def bindings() -> dict[str, Any]:
    """JSON-like data plus datetimes, shared by every implementation."""

    def item(i: int) -> dict[str, Any]:
        return {"id": i, "price": 10.0 + i, "qty": i % 3, "status": "ok"}

    return {
        "request": {
            "amount": 1250,
            "ratio": 2.5,
            "path": "/api/v1/orders/42",
            "email": "alice@example.com",
            "user": {"id": "u1", "org": "acme", "level": 3, "roles": ["viewer", "editor"]},
            "resource": {"owner": "u1", "org": "acme", "tags": {"env": "prod", "tier": "gold"}},
        },
        "items10": [item(i) for i in range(10)],
        "items1000": [item(i) for i in range(1000)],
        "now": datetime(2026, 1, 15, 12, 0, tzinfo=UTC),
        "expires": datetime(2026, 6, 1, tzinfo=UTC),
    }


# --- implementations -------------------------------------------------------------------------------


@dataclass
class Implementation:
    name: str
    prepare: Callable[[dict[str, Any]], Any]  # bindings -> activation in the implementation's value form
    compile: Callable[[str], Callable[[Any], Any]]  # source -> evaluate(activation)
    normalize: Callable[[Any], Any]  # result -> plain Python for comparison


# Declarations for `--checked`: how Charter compiles workflow expressions (type-checked).
DECLARATIONS = {
    "request": "map(string, dyn)",
    "items10": "list(map(string, dyn))",
    "items1000": "list(map(string, dyn))",
    "now": "timestamp",
    "expires": "timestamp",
}


def charter(checked: bool = False) -> Implementation:
    declarations = DECLARATIONS if checked else None

    def compile_(source: str) -> Callable[[Any], Any]:
        return charter_cel.compile(source, declarations).evaluate

    return Implementation("charter", charter_cel.to_cel, compile_, charter_cel.from_cel)


def celpy_impl() -> Implementation | str:
    try:
        import celpy
        from celpy import celtypes
    except ImportError:
        return "cel-python not installed (pip install cel-python)"
    env = celpy.Environment()

    def compile_(source: str) -> Callable[[Any], Any]:
        return env.program(env.compile(source)).evaluate

    def prepare(data: dict[str, Any]) -> Any:
        return {name: celpy.json_to_cel(value) for name, value in data.items()}

    def normalize(value: Any) -> Any:
        if isinstance(value, celtypes.BoolType):
            return bool(value)
        if isinstance(value, celtypes.IntType | celtypes.UintType):
            return int(value)
        if isinstance(value, celtypes.DoubleType):
            return float(value)
        if isinstance(value, celtypes.StringType):
            return str(value)
        if isinstance(value, list):
            return [normalize(v) for v in value]
        if isinstance(value, Mapping):
            return {normalize(k): normalize(v) for k, v in value.items()}
        return value

    return Implementation("cel-python", prepare, compile_, normalize)


def rust_impl() -> Implementation | str:
    try:
        import cel
    except ImportError:
        return "common-expression-language not installed (pip install common-expression-language)"
    if not hasattr(cel, "Context"):
        return "the installed `cel` module is not common-expression-language"

    def compile_(source: str) -> Callable[[Any], Any]:
        return cel.compile(source).execute

    return Implementation("cel-rust", lambda data: cel.Context(variables=data), compile_, lambda v: v)


# --- measuring -------------------------------------------------------------------------------------


def per_second(evaluate: Callable[[Any], Any], activation: Any, seconds: float) -> float:
    """Evaluations per second: batches doubled until one takes long enough, best of three batches."""
    number = 1
    while True:
        start = time.perf_counter()
        for _ in range(number):
            evaluate(activation)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds / 4:
            break
        number *= 2
    best = elapsed
    for _ in range(2):
        start = time.perf_counter()
        for _ in range(number):
            evaluate(activation)
        best = min(best, time.perf_counter() - start)
    return number / best


def compile_ms(impl: Implementation, source: str, repeat: int = 5) -> float:
    """Best-of-`repeat` compile time; trailing spaces make each source new, so caches cannot answer."""
    times = []
    for extra in range(1, repeat + 1):
        text = source + " " * extra
        start = time.perf_counter()
        impl.compile(text)
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def check_agreement(
    impls: list[Implementation], activations: dict[str, Any], names: list[str]
) -> dict[str, set[str]]:
    """Assert every implementation gives the same result; returns implementations failing per expression."""
    unsupported: dict[str, set[str]] = {name: set() for name in names}
    for name in names:
        results: dict[str, Any] = {}
        for impl in impls:
            try:
                results[impl.name] = impl.normalize(impl.compile(EXPRESSIONS[name])(activations[impl.name]))
            except Exception as error:  # a peer lacking a feature is reported, not fatal
                if impl.name == "charter":
                    raise SystemExit(f"charter failed on {name}: {type(error).__name__}: {error}") from error
                unsupported[name].add(impl.name)
                print(f"  note: {impl.name} cannot evaluate {name}: {type(error).__name__}: {error}")
        values = list(results.values())
        if any(v != values[0] or type(v) is not type(values[0]) for v in values):
            raise SystemExit(f"implementations disagree on {name}: {results}")
    return unsupported


def fmt_rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:,.0f}"


def fmt_ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{a / b:.1f}x"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.3, help="time per measurement (default 0.3)")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per implementation, best kept")
    parser.add_argument("--only", nargs="*", default=None, help="expression names to run")
    parser.add_argument("--checked", action="store_true", help="compile Charter's programs type-checked")
    parser.add_argument("--skip-celpy", action="store_true", help="leave out cel-python (it is slow)")
    args = parser.parse_args(argv)
    names = args.only or list(EXPRESSIONS)

    impls: list[Implementation] = [charter(args.checked)]
    peers = [rust_impl()] if args.skip_celpy else [celpy_impl(), rust_impl()]
    for peer in peers:
        if isinstance(peer, str):
            print(f"skipping peer: {peer}")
        else:
            impls.append(peer)
    data = bindings()
    activations = {impl.name: impl.prepare(data) for impl in impls}
    unsupported = check_agreement(impls, activations, names)
    print(f"all implementations agree on {len(names)} expressions ({', '.join(i.name for i in impls)})\n")

    rates: dict[str, dict[str, float | None]] = {}
    compiles: dict[str, dict[str, float]] = {}
    for name in names:
        compiles[name] = {impl.name: compile_ms(impl, EXPRESSIONS[name]) for impl in impls}
        programs = {impl.name: impl.compile(EXPRESSIONS[name]) for impl in impls}
        rates[name] = {impl.name: None for impl in impls}
        # Rounds alternate the implementations so a busy machine hurts them alike; keep each one's best.
        for _ in range(args.rounds):
            for impl in impls:
                if impl.name in unsupported[name]:
                    continue
                rate = per_second(programs[impl.name], activations[impl.name], args.seconds)
                rates[name][impl.name] = max(rate, rates[name][impl.name] or 0.0)
    report(names, impls, rates, compiles)
    return 0


def report(
    names: list[str],
    impls: list[Implementation],
    rates: dict[str, dict[str, float | None]],
    compiles: dict[str, dict[str, float]],
) -> None:
    peers = [impl.name for impl in impls if impl.name != "charter"]
    header = f"{'expression':<14}" + "".join(f"{impl.name + ' eval/s':>20}" for impl in impls)
    header += "".join(f"{'vs ' + p:>14}" for p in peers)
    print(header)
    for name in names:
        row = f"{name:<14}" + "".join(f"{fmt_rate(rates[name][i.name]):>20}" for i in impls)
        row += "".join(f"{fmt_ratio(rates[name]['charter'], rates[name][p]):>14}" for p in peers)
        print(row)
    print()
    for peer in peers:
        ratios = [r["charter"] / r[peer] for r in rates.values() if r[peer] and r["charter"]]
        if ratios:
            print(
                f"charter vs {peer}: median {statistics.median(ratios):.2f}x, min {min(ratios):.2f}x, max {max(ratios):.2f}x"
            )
    print(f"\n{'compile ms':<14}" + "".join(f"{impl.name:>20}" for impl in impls))
    for name in names:
        print(f"{name:<14}" + "".join(f"{compiles[name][i.name]:>20.3f}" for i in impls))


if __name__ == "__main__":
    sys.exit(main())
