"""Patches of GX 1.x internals that change no result and cut what GX spends on bookkeeping.

1. A per-validation memo of Expectation.configuration. Why: GX's `Expectation.configuration` is a property that rebuilds an ExpectationConfiguration
from the pydantic model (`.dict()`, a deepcopy of every kwarg, a regex camel_to_snake) on every
access, and `_get_success_kwargs` / `_get_domain_kwargs` / `_get_success_kwarg` read it once per
kwarg key: about 1,400 rebuilds per hour partition of our suites (68k for a day), 40% of the time
GX spends validating a small hour (profile in docs/measurements.md). Inside one `graph_validate`
call the Expectation objects are built by GX from the suite's configurations and not changed, so
the first rebuild per object is reused until that call returns; outside a validation nothing
changes.

2. A batch fingerprint that is given instead of computed. Why: GX's pandas engine fingerprints every
batch below 1 GB by hashing every cell (`hash_pandas_dataframe`, recorded in the result's
batch_markers); on a 411k-row hour that is 0.5-1 s of a 1.8 s suite. An hour's rows are exactly the
objects read (key + ETag), so `fingerprint(frame, objects)` records a digest of those instead; a
frame without one is hashed by GX as before.

3. `expect_column_values_to_be_between` on integer columns, vectorised. Why: GX compares numpy
int64 and float columns in one vectorised step but every other dtype, our nullable Int32 / Int64
(position, dwell_ms) included, one Python call per row (`Series.map(is_between)`): 0.2-0.3 s of an
hour's 0.5 s suite at 411k rows. With numeric bounds on an integer column, GX's own vectorised
comparison is used; anything else (strings, dates, mixed bounds) goes to GX's original function.

4. `convert_to_json_serializable(None)` answered first. Why: every MetricConfiguration GX builds
(thousands per hour partition) hashes its kwargs through this function, and most of those kwargs are
None, which it checks against some twenty types and four `np.issubdtype` calls before returning None:
the largest single leaf of the validate task's profile (py-spy, 2026-12-05).

install() is idempotent and does nothing if GX's internals differ from what it expects.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import json
import logging
from typing import Any, Iterator

log = logging.getLogger(__name__)
_MEMO: contextvars.ContextVar[dict[int, tuple[Any, Any]] | None] = contextvars.ContextVar("gx_config_memo",
                                                                                        default=None)
_OFF: contextvars.ContextVar[bool] = contextvars.ContextVar("gx_config_memo_off", default=False)
_installed = False
_FINGERPRINT = "feedloop_fingerprint"


def install() -> bool:
    """Patch GX once per process; returns whether the memo is active."""
    global _installed
    if _installed:
        return True
    from great_expectations.execution_engine import pandas_execution_engine as engine
    from great_expectations.expectations.expectation import Expectation
    from great_expectations.validator.validator import Validator

    prop = Expectation.__dict__.get("configuration")
    validate = Validator.__dict__.get("graph_validate")
    digest = getattr(engine, "hash_pandas_dataframe", None)
    if not isinstance(prop, property) or prop.fget is None or validate is None or digest is None:
        log.warning("GX internals differ from what feedloop.quality.gxfast expects: not patched")
        return False
    build = prop.fget

    def configuration(self: Any) -> Any:
        memo = _MEMO.get()
        if memo is None:
            return build(self)
        hit = memo.get(id(self))
        if hit is None or hit[0] is not self:
            hit = memo[id(self)] = (self, build(self))  # the object itself is kept: its id is not reused
        return hit[1]

    @functools.wraps(validate)
    def graph_validate(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _OFF.get():
            return validate(self, *args, **kwargs)
        token = _MEMO.set({})
        try:
            return validate(self, *args, **kwargs)
        finally:
            _MEMO.reset(token)

    def hash_pandas_dataframe(df: Any) -> str:
        given = None if _OFF.get() else df.attrs.get(_FINGERPRINT)
        return given if given is not None else digest(df)

    Expectation.configuration = property(configuration, doc=prop.__doc__)  # type: ignore[method-assign]
    Validator.graph_validate = graph_validate  # type: ignore[method-assign]
    engine.hash_pandas_dataframe = hash_pandas_dataframe
    if not _vectorise_integer_between():
        log.warning("GX's column_values.between differs from what feedloop.quality.gxfast expects: not vectorised")
    _none_first()
    _installed = True
    return True


def _vectorise_integer_between() -> bool:
    """Swap GX's pandas `column_values.between` row function for one that vectorises integer columns.

    The registered metric is GX's partial wrapper around column_condition_partial's inner function,
    whose closure cell `metric_fn` holds ColumnValuesBetween._pandas; that cell is replaced.
    """
    from pandas.api.types import is_bool_dtype, is_integer_dtype

    from great_expectations.expectations.registry import _registered_metrics

    try:
        provider, registered = _registered_metrics["column_values.between.condition"]["providers"][
            "PandasExecutionEngine"]
    except KeyError:
        return False
    inner = _closure_cell(registered, "metric_fn")
    cell = _closure_cell(inner.cell_contents, "metric_fn") if inner is not None else None
    original = cell.cell_contents if cell is not None else None
    if original is None or not original.__code__.co_filename.endswith("column_values_between.py"):
        return False

    def between(cls: Any, column: Any, min_value: Any = None, max_value: Any = None, strict_min: Any = None,
                strict_max: Any = None, **kwargs: Any) -> Any:
        numeric = all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
                      for v in (min_value, max_value))
        if (_OFF.get() or not numeric or (min_value is None and max_value is None)
                or not is_integer_dtype(column.dtype) or is_bool_dtype(column.dtype)
                or (min_value is not None and max_value is not None and min_value > max_value)):
            return original(cls, column, min_value=min_value, max_value=max_value, strict_min=strict_min,
                            strict_max=strict_max, **kwargs)
        return provider._pandas_vectorized(column, min_value, max_value, strict_min, strict_max)

    cell.cell_contents = between
    return True


def _none_first() -> None:
    """Route GX's convert_to_json_serializable, and every GX module that imported it by name, through a
    wrapper that returns None for None at once (GX's own answer, reached after all its type checks)."""
    import sys

    from great_expectations import util

    original = util.convert_to_json_serializable

    @functools.wraps(original)
    def convert(data: Any) -> Any:
        if data is None and not _OFF.get():
            return None
        return original(data)

    for name, module in list(sys.modules.items()):
        if name.startswith("great_expectations") and getattr(module, "convert_to_json_serializable", None) is original:
            module.convert_to_json_serializable = convert  # type: ignore[attr-defined]


def _closure_cell(fn: Any, name: str) -> Any:
    """The closure cell called `name` of function `fn`, or None."""
    code = getattr(fn, "__code__", None)
    if code is None or name not in code.co_freevars or fn.__closure__ is None:
        return None
    return fn.__closure__[code.co_freevars.index(name)]


def fingerprint(frame: Any, objects: dict[str, str]) -> Any:
    """Mark `frame` as the rows of exactly these objects ({key: ETag}); GX records this digest."""
    body = json.dumps(sorted(objects.items()), separators=(",", ":")).encode()
    frame.attrs[_FINGERPRINT] = f"objects:{hashlib.md5(body, usedforsecurity=False).hexdigest()}:{len(frame)}"
    return frame


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """GX's own behaviour inside the block, even when installed (for comparisons)."""
    token = _OFF.set(True)
    try:
        yield
    finally:
        _OFF.reset(token)
