"""Checking args against a task's signature: strict, never coercing, with a fast path.

The fast path (`Task.args_fit`) accepts values whose Python types already match simple
annotations; anything else goes to pydantic's strict mode, which decided everything before. The
fast path must never accept what that check rejects, and must leave its messages unchanged.
"""

from __future__ import annotations

import enum
import itertools
from datetime import UTC, datetime
from typing import Any, Literal, Optional

import orjson
import pydantic
import pytest

import pgq
from pgq.testing import InMemoryBackend

# Tasks named outside `tests.unit`, which test_tasks.py expects to define no task.


@pgq.task(name="argcheck.scalars")
def scalars(i: int = -1, t: float = 0.0, s: str = "", b: bool = False) -> None: ...


@pgq.task(name="argcheck.required_int")
def required_int(n: int) -> None: ...


@pgq.task(name="argcheck.optional_int")
def optional_int(n: Optional[int]) -> None: ...  # noqa: UP045 - the typing spelling, on purpose


@pgq.task(name="argcheck.union_int_none")
def union_int_none(n: int | None = None) -> None: ...


@pgq.task(name="argcheck.nested")
def nested(rows: list[dict[str, list[int | None]]], meta: dict[str, Any] | None = None) -> None: ...


@pgq.task(name="argcheck.bare")
def bare(items: list, mapping: dict, anything: Any = None, untyped=None) -> None: ...  # type: ignore[type-arg]


@pgq.task(name="argcheck.kwargs_task")
def kwargs_task(a: int, **rest: int) -> None: ...


@pgq.task(name="argcheck.with_ctx")
def with_ctx(x: int, ctx: pgq.Context) -> None: ...


class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 1


@pgq.task(name="argcheck.rich")
def rich(
    color: Color | None = None,
    mode: Literal["a", "b"] = "a",
    pair: tuple[int, int] = (0, 0),
    when: datetime | None = None,
) -> None: ...


@pgq.task(name="argcheck.literal_int")
def literal_int(n: Literal[1, 2]) -> None: ...


@pgq.task(name="argcheck.untyped")
def untyped(a, b=1) -> None: ...  # type: ignore[no-untyped-def]


def full_check(task: pgq.Task[..., Any], args: dict[str, Any]) -> str | None:
    """What pydantic's strict mode says of `args` once JSON decodes them: the reference."""
    problem = task.args_problem(args)
    if problem is not None:
        return problem
    try:
        task._signature.model.model_validate(orjson.loads(orjson.dumps(args)))
    except pydantic.ValidationError as exc:
        return str(exc)
    return None


def check_message(task: pgq.Task[..., Any], args: dict[str, Any]) -> str | None:
    try:
        task.check_args(args)
    except pgq.EnqueueError as exc:
        return str(exc)
    return None


# -- each edge, pinned ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "args", "message"),
    [
        (scalars, {"i": True}, "i: input should be a valid integer"),  # bool is no int
        (scalars, {"i": 1.0}, "i: input should be a valid integer"),
        (scalars, {"i": "1"}, "i: input should be a valid integer"),  # no coercion
        (scalars, {"t": True}, "t: input should be a valid number"),  # bool is no float
        (scalars, {"t": "0.5"}, "t: input should be a valid number"),
        (scalars, {"s": 1}, "s: input should be a valid string"),
        (scalars, {"b": 1}, "b: input should be a valid boolean"),
        (scalars, {"b": "true"}, "b: input should be a valid boolean"),
        (scalars, {"i": "x", "t": "y"}, "i: input should be a valid integer; t: input should be"),
        (optional_int, {"n": "1"}, "n: input should be a valid integer"),
        (union_int_none, {"n": True}, "n: input should be a valid integer"),
        (nested, {"rows": [{"a": [1, True]}]}, "rows.0.a.1: input should be a valid integer"),
        (nested, {"rows": [{"a": "x"}]}, "rows.0.a: input should be a valid list"),
        (nested, {"rows": {}}, "rows: input should be a valid list"),
        (nested, {"rows": [], "meta": []}, "meta: input should be a valid dictionary"),
        (bare, {"items": {}, "mapping": {}}, "items: input should be a valid list"),
        (bare, {"items": [], "mapping": []}, "mapping: input should be a valid dictionary"),
        (kwargs_task, {"a": "1", "z": 1}, "a: input should be a valid integer"),
        (with_ctx, {"x": 1, "ctx": 1}, r"unexpected argument\(s\) ctx"),
        (with_ctx, {}, r"missing argument\(s\) x"),
        (required_int, {}, r"missing argument\(s\) n"),
        (required_int, {"n": 1, "m": 2}, r"unexpected argument\(s\) m"),
        (rich, {"color": "blue"}, "color"),
        (rich, {"mode": "c"}, "mode: input should be 'a' or 'b'"),
        (rich, {"mode": 1}, "mode: input should be 'a' or 'b'"),
        (rich, {"pair": [1, 2]}, "pair: input should be a valid tuple"),
        (rich, {"when": "2030-01-01T00:00:00Z"}, "when"),  # strict: no str for a datetime
    ],
)
def test_what_is_rejected_and_how_it_is_said(
    task: pgq.Task[..., Any], args: dict[str, Any], message: str
) -> None:
    assert not task.args_fit(args)
    with pytest.raises(pgq.EnqueueError, match=message) as caught:
        task.check_args(args)
    assert str(caught.value).startswith(f"args for {task.name} do not fit its signature: ")
    backend = InMemoryBackend()
    with pytest.raises(pgq.EnqueueError, match=message):
        pgq.enqueue(backend, task, args)
    assert pgq.list_jobs(backend) == []


@pytest.mark.parametrize(
    ("task", "args"),
    [
        (scalars, {}),  # every parameter has a default
        (scalars, {"i": 1, "t": 0.5, "s": "x", "b": True}),
        (scalars, {"t": 1}),  # an int is a float in strict mode
        (scalars, {"i": -(2**63), "t": 2**64 - 1}),
        (optional_int, {"n": None}),
        (optional_int, {"n": 3}),
        (union_int_none, {}),
        (nested, {"rows": [{"a": [1, None]}, {}], "meta": {"k": [1, {"x": None}]}}),
        (nested, {"rows": ({"a": (1, 2)},)}),  # tuples are lists once JSON has them
        (bare, {"items": [1, "a", None, [True]], "mapping": {"a": {"b": 1.5}}, "anything": [1]}),
        (bare, {"items": [], "mapping": {}, "untyped": {"x": [1]}}),
        (kwargs_task, {"a": 1, "anything": "goes", "nested": [1, {"x": 2}]}),  # extras unchecked
        (with_ctx, {"x": 1}),  # ctx is passed by the worker, never stored in the args
        (untyped, {"a": {"any": "json"}}),
        (rich, {"mode": "b"}),  # a Literal of strings, ints, bools or None
    ],
)
def test_simple_values_take_the_fast_path(task: pgq.Task[..., Any], args: dict[str, Any]) -> None:
    assert task.args_fit(args)
    assert full_check(task, args) is None
    task.check_args(args)


@pytest.mark.parametrize(
    ("task", "args"),
    [
        (scalars, {"i": Level.HIGH}),  # an IntEnum is an int once JSON has it
        (rich, {"color": "red", "mode": "b"}),
        (literal_int, {"n": True}),  # pydantic's Literal[1] takes True, even in strict mode
        (literal_int, {"n": 1.0}),
        (rich, {"color": None}),  # `Color | None`: only pydantic knows Color
        (rich, {"pair": (1, 2)}),  # a tuple becomes a list: rejected, as before
    ],
)
def test_the_rest_goes_to_pydantic_and_means_the_same(
    task: pgq.Task[..., Any], args: dict[str, Any]
) -> None:
    assert not task.args_fit(args)
    reference = full_check(task, args)
    assert (check_message(task, args) is None) == (reference is None)


def test_args_are_stored_exactly_as_given() -> None:
    backend = InMemoryBackend()
    job = pgq.enqueue(backend, scalars, {"i": 2, "t": 1})
    record = pgq.get_job(backend, job.id)
    assert record is not None and record.args == {"i": 2, "t": 1}
    assert type(record.args["t"]) is int  # not coerced to 1.0


def test_non_json_args_still_say_so_under_kwargs() -> None:
    with pytest.raises(pgq.EnqueueError, match=r"not JSON: args\['z'\] is a set"):
        pgq.enqueue(InMemoryBackend(), kwargs_task, {"a": 1, "z": {1}})
    with pytest.raises(pgq.EnqueueError, match="which JSON cannot hold"):
        pgq.enqueue(InMemoryBackend(), scalars, {"t": float("inf")})
    with pytest.raises(pgq.EnqueueError, match="not JSON"):
        pgq.enqueue(InMemoryBackend(), nested, {"rows": [], "meta": {1: 2}})


def test_a_bad_job_in_a_batch_is_named_and_nothing_is_written() -> None:
    backend = InMemoryBackend()
    specs = [pgq.JobSpec(task=scalars, args={"i": k, "t": k / 2}) for k in range(100)]
    specs[57] = pgq.JobSpec(task=scalars, args={"i": "57"})
    with pytest.raises(pgq.EnqueueError, match=r"jobs\[57\]: .*i: input should be a valid integer"):
        pgq.enqueue_many(backend, specs)
    assert pgq.list_jobs(backend) == []


# -- the fast path never accepts what pydantic rejects ----------------------------------------

VALUES: list[Any] = [
    None, True, False, 0, 1, -1, 2**63, 0.0, 1.5, -2.5, float("nan"), "", "x", "1",
    [], [1], [1, 2.5], [True], ["a"], [None], [1, None], (1, 2), [[1]], [{"a": 1}],
    {}, {"a": 1}, {"a": 1.5}, {"a": True}, {"a": None}, {"a": [1]}, {"a": {"b": 1}}, {1: 1},
    Level.HIGH, {1, 2},
]  # fmt: skip


def test_fast_path_agrees_with_pydantic_on_every_pair() -> None:
    hints: list[Any] = [
        int, float, str, bool, type(None), Any, list, dict, Optional[int], int | str,  # noqa: UP045
        float | None, list[int], list[float], list[str | None], list[list[int]], dict[str, int],
        dict[str, float | None], dict[str, list[int]], list[dict[str, Any]], dict[str, Any],
        Literal["x", ""], Literal[1, 0], Literal[True], Literal[None, "1"], list[Literal[1]],
    ]  # fmt: skip
    fast = 0
    for n, (hint, value) in enumerate(itertools.product(hints, VALUES)):

        def fn(x: Any) -> None: ...

        fn.__annotations__ = {"x": hint, "return": None}
        task = pgq.task(name=f"argcheck.pair_{n}")(fn)
        args = {"x": value}
        try:
            reference: object = full_check(task, args)
        except TypeError as exc:  # orjson: a non-string key
            reference = exc
        if task.args_fit(args):
            fast += 1
            assert reference is None, (hint, value, reference)
        elif reference is None:
            assert check_message(task, args) is None
    assert fast > 100  # the simple cases really take the fast path


def test_a_task_defined_with_datetime_args_still_rejects_them_at_enqueue() -> None:
    with pytest.raises(pgq.EnqueueError, match="not JSON"):
        pgq.enqueue(InMemoryBackend(), rich, {"when": datetime(2030, 1, 1, tzinfo=UTC)})
