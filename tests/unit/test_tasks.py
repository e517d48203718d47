from __future__ import annotations

import pytest

import pgq
from pgq._core.tasks import load_tasks, registered
from tests import tasks


def test_task_names_and_settings() -> None:
    assert tasks.send_email.name == "tests.tasks.send_email"
    assert tasks.send_email.queue == "emails" and tasks.send_email.max_attempts == 3
    assert registered("tests.tasks.add") is tasks.add
    assert tasks.add(2, 3) == 5  # calling a task runs the function
    assert tasks.uses_ctx.ctx_param == "ctx"
    assert tasks.async_noop.is_async


def test_decorator_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="queue name"):
        pgq.task(queue="")(lambda: None)
    with pytest.raises(ValueError, match="max_attempts"):
        pgq.task(max_attempts=0)(lambda: None)
    with pytest.raises(ValueError, match="timeout"):
        pgq.task(timeout=0)(lambda: None)

    def positional_only(a: int, /) -> None: ...

    with pytest.raises(ValueError, match="positional-only"):
        pgq.task(positional_only)


def test_load_tasks_finds_a_modules_tasks() -> None:
    found = load_tasks(["tests.tasks"])
    assert found["tests.tasks.add"] is tasks.add
    assert "tests.tasks.async_noop" in found
    assert load_tasks(["tests.tasks.add"]) == {"tests.tasks.add": tasks.add}


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("no_such_module_xyz", "cannot import tasks from 'no_such_module_xyz'"),
        ("tests.tasks.nope", "cannot import tasks"),
        ("tests.unit", "defines no pgq task"),
    ],
)
def test_load_tasks_errors_name_the_module(path: str, message: str) -> None:
    with pytest.raises(pgq.TaskNotFound, match=message):
        load_tasks([path])


def test_args_problem_is_the_workers_cheap_check() -> None:
    assert tasks.add.args_problem({"a": 1, "b": 2}) is None
    assert tasks.add.args_problem({"a": "x", "b": 2}) is None  # types are enqueue's job
    assert "missing" in (tasks.add.args_problem({"a": 1}) or "")
    assert "unexpected" in (tasks.add.args_problem({"a": 1, "b": 1, "c": 1}) or "")
    assert "JSON object" in (tasks.add.args_problem([1]) or "")
    assert tasks.with_kwargs.args_problem({"a": 1, "z": 1}) is None


def test_strict_check_never_coerces() -> None:
    with pytest.raises(pgq.EnqueueError, match="valid integer"):
        tasks.add.check_args({"a": 1, "b": 2.5})
    with pytest.raises(pgq.EnqueueError, match="valid integer"):
        tasks.add.check_args({"a": 1, "b": True})
    tasks.add.check_args({"a": 1, "b": 2})
