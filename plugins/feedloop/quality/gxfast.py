"""Per-validation memo of GX's Expectation.configuration (GX 1.x): same results, less GX bookkeeping.

Why: GX's `Expectation.configuration` is a property that rebuilds an ExpectationConfiguration
from the pydantic model (`.dict()`, a deepcopy of every kwarg, a regex camel_to_snake) on every
access, and `_get_success_kwargs` / `_get_domain_kwargs` / `_get_success_kwarg` read it once per
kwarg key: about 1,400 rebuilds per hour partition of our suites (68k for a day), 40% of the time
GX spends validating a small hour (profile in docs/measurements.md). Inside one `graph_validate`
call the Expectation objects are built by GX from the suite's configurations and not changed, so
the first rebuild per object is reused until that call returns; outside a validation nothing
changes. install() is idempotent and does nothing if GX's internals differ from what it expects.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
from typing import Any, Iterator

log = logging.getLogger(__name__)
_MEMO: contextvars.ContextVar[dict[int, tuple[Any, Any]] | None] = contextvars.ContextVar("gx_config_memo",
                                                                                        default=None)
_OFF: contextvars.ContextVar[bool] = contextvars.ContextVar("gx_config_memo_off", default=False)
_installed = False


def install() -> bool:
    """Patch GX once per process; returns whether the memo is active."""
    global _installed
    if _installed:
        return True
    from great_expectations.expectations.expectation import Expectation
    from great_expectations.validator.validator import Validator

    prop = Expectation.__dict__.get("configuration")
    validate = Validator.__dict__.get("graph_validate")
    if not isinstance(prop, property) or prop.fget is None or validate is None:
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

    Expectation.configuration = property(configuration, doc=prop.__doc__)  # type: ignore[method-assign]
    Validator.graph_validate = graph_validate  # type: ignore[method-assign]
    _installed = True
    return True


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """GX's own behaviour inside the block, even when installed (for comparisons)."""
    token = _OFF.set(True)
    try:
        yield
    finally:
        _OFF.reset(token)
