"""`@pgq.task`, the task registry, and checking args against a task's signature."""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, ParamSpec, TypeVar, overload

import orjson
import pydantic

from pgq._domain import DEFAULT_QUEUE, Backoff, check_queue_name
from pgq._errors import EnqueueError, TaskNotFound
from pgq._records import Context

P = ParamSpec("P")
R = TypeVar("R")

# Every task defined in this process, by name. Written at import time by @task.
_REGISTRY: dict[str, Task[..., Any]] = {}


class Task(Generic[P, R]):
    """A function registered as a pgq task. Calling it runs the function directly (no job).

    Attributes follow `@pgq.task`'s arguments; `name` is the dotted name jobs store.
    """

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        queue: str = DEFAULT_QUEUE,
        max_attempts: int | None = None,
        backoff: Backoff | None = None,
        timeout: float | None = None,
        priority: int = 0,
    ) -> None:
        try:
            check_queue_name(queue)
        except ValueError as exc:
            raise ValueError(f"@pgq.task on {fn.__qualname__}: {exc}") from None
        if max_attempts is not None and max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts!r}")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.fn = fn
        self.name = name or f"{fn.__module__}.{fn.__qualname__}"
        self.queue = queue
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.timeout = timeout
        self.priority = priority
        self.is_async = inspect.iscoroutinefunction(fn)
        self._signature = _Signature.of(fn, self.name)
        functools.update_wrapper(self, fn)

    @property
    def ctx_param(self) -> str | None:
        """The name of the parameter annotated `pgq.Context`, if any."""
        return self._signature.ctx_param

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<pgq.Task {self.name} queue={self.queue!r}>"

    def check_args(self, args: Mapping[str, Any]) -> None:
        """Raise EnqueueError unless `args`, as JSON decodes them, fit the signature exactly."""
        self._signature.check_strict(args)

    def args_problem(self, args: object) -> str | None:
        """Why a stored payload cannot be passed to this task, or None (a cheap check)."""
        return self._signature.problem(args)


class _Signature:
    """What a task's parameters accept: a cheap key check for the worker, pydantic for enqueue."""

    def __init__(
        self,
        *,
        name: str,
        required: frozenset[str],
        allowed: frozenset[str],
        takes_kwargs: bool,
        ctx_param: str | None,
        model: type[pydantic.BaseModel],
        typed: bool,
    ) -> None:
        self.typed = typed
        self.name = name
        self.required = required
        self.allowed = allowed
        self.takes_kwargs = takes_kwargs
        self.ctx_param = ctx_param
        self.model = model

    @classmethod
    def of(cls, fn: Callable[..., Any], name: str) -> _Signature:
        sig = inspect.signature(fn)
        try:
            hints = typing.get_type_hints(fn)
        except Exception:
            hints = {}
        required: set[str] = set()
        allowed: set[str] = set()
        fields: dict[str, Any] = {}
        takes_kwargs = False
        ctx_param: str | None = None
        for param in sig.parameters.values():
            hint = hints.get(param.name, Any)
            if hint is Context:
                ctx_param = param.name
                continue
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                takes_kwargs = True
                continue
            if param.kind is inspect.Parameter.VAR_POSITIONAL:
                continue
            if param.kind is inspect.Parameter.POSITIONAL_ONLY:
                raise ValueError(
                    f"task {name}: parameter {param.name!r} is positional-only; "
                    "job args are passed by keyword"
                )
            allowed.add(param.name)
            if param.default is inspect.Parameter.empty:
                required.add(param.name)
                fields[param.name] = (hint, ...)
            else:
                fields[param.name] = (hint, param.default)
        config = pydantic.ConfigDict(
            strict=True,
            extra="allow" if takes_kwargs else "forbid",
            arbitrary_types_allowed=True,
        )
        model = pydantic.create_model(f"Args_{name.replace('.', '_')}", __config__=config, **fields)
        return cls(
            name=name,
            required=frozenset(required),
            allowed=frozenset(allowed),
            takes_kwargs=takes_kwargs,
            ctx_param=ctx_param,
            model=model,
            typed=any(hint is not Any for hint, _ in fields.values()),
        )

    def problem(self, args: object) -> str | None:
        if not isinstance(args, dict):
            return f"args must be a JSON object, got {type(args).__name__}"
        keys = args.keys()
        missing = self.required - keys
        if missing:
            return f"missing argument(s) {', '.join(sorted(missing))} for {self.name}"
        if not self.takes_kwargs:
            unexpected = keys - self.allowed
            if unexpected:
                return f"unexpected argument(s) {', '.join(sorted(unexpected))} for {self.name}"
        return None

    def check_strict(self, args: Mapping[str, Any]) -> None:
        problem = self.problem(args)
        if problem is not None:
            raise EnqueueError(f"args for {self.name} do not fit its signature: {problem}")
        if not self.typed:
            return  # names checked above; no annotation left to check values against
        # Validate what the task will really receive: the values as JSON decodes them.
        decoded = orjson.loads(orjson.dumps(args))
        try:
            self.model.model_validate(decoded)
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'args'}: {err['msg'].lower()}"
                for err in exc.errors()
            )
            raise EnqueueError(
                f"args for {self.name} do not fit its signature: {problems}"
            ) from None


@overload
def task(fn: Callable[P, R], /) -> Task[P, R]: ...


@overload
def task(
    *,
    name: str | None = None,
    queue: str = DEFAULT_QUEUE,
    max_attempts: int | None = None,
    backoff: Backoff | None = None,
    timeout: float | None = None,
    priority: int = 0,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    queue: str = DEFAULT_QUEUE,
    max_attempts: int | None = None,
    backoff: Backoff | None = None,
    timeout: float | None = None,
    priority: int = 0,
) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
    """Register a function as a task.

    Args:
        name: the dotted name jobs store; default `module.qualname`.
        queue: the queue its jobs go to unless enqueue says otherwise; default "default".
        max_attempts: how many times a job may run (claims); default: the queue's, else 5.
        backoff: delay between attempts, `pgq.Backoff(base=1.0, cap=3600.0)` (seconds, full jitter).
        timeout: seconds an attempt may take before it fails; default none.
        priority: lower runs first within a queue; default 0.

    Example:
        >>> import pgq
        >>> @pgq.task(queue="emails", max_attempts=3)
        ... def send_email(to: str) -> None: ...
        >>> send_email.name.endswith("send_email")
        True
    """

    def register(f: Callable[P, R]) -> Task[P, R]:
        t = Task(
            f,
            name=name,
            queue=queue,
            max_attempts=max_attempts,
            backoff=backoff,
            timeout=timeout,
            priority=priority,
        )
        _REGISTRY[t.name] = t
        return t

    return register(fn) if fn is not None else register


def registered(name: str) -> Task[..., Any] | None:
    """The task of that name defined in this process, if any."""
    return _REGISTRY.get(name)


def load_tasks(modules: Iterable[str]) -> dict[str, Task[..., Any]]:
    """Import each module (or `module.task` path) and return the tasks it defines, by name.

    Raises TaskNotFound naming the module when it does not import or defines no task.
    """
    found: dict[str, Task[..., Any]] = {}
    for path in modules:
        module_tasks = _tasks_at(path)
        if not module_tasks:
            raise TaskNotFound(f"{path!r} defines no pgq task (decorate functions with @pgq.task)")
        found.update(module_tasks)
    return found


def _tasks_at(path: str) -> dict[str, Task[..., Any]]:
    try:
        module = importlib.import_module(path)
    except ModuleNotFoundError as exc:
        if exc.name is not None and path.startswith(exc.name) and "." in path:
            # maybe `package.module.task_name`
            head, _, attr = path.rpartition(".")
            try:
                obj = getattr(importlib.import_module(head), attr)
            except (ImportError, AttributeError):
                raise TaskNotFound(f"cannot import tasks from {path!r}: {exc}") from exc
            if isinstance(obj, Task):
                return {obj.name: obj}
            raise TaskNotFound(f"{path!r} is not a pgq task") from None
        raise TaskNotFound(f"cannot import tasks from {path!r}: {exc}") from exc
    except Exception as exc:
        raise TaskNotFound(f"cannot import tasks from {path!r}: {exc!r}") from exc
    tasks = {obj.name: obj for obj in vars(module).values() if isinstance(obj, Task)}
    prefix = module.__name__ + "."
    tasks.update({n: t for n, t in _REGISTRY.items() if n.startswith(prefix)})
    return tasks


def json_problem(value: object, path: str = "args") -> str | None:
    """Where `value` stops being JSON, or None. Used for the enqueue error message.

    >>> json_problem({"a": [1, {1}]})
    "args['a'][1] is a set"
    """
    if value is None or isinstance(value, bool | int | str):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} is {value!r}, which JSON cannot hold"
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            if (p := json_problem(item, f"{path}[{i}]")) is not None:
                return p
        return None
    if isinstance(value, dict):
        for k, item in value.items():
            if not isinstance(k, str):
                return f"{path} has a key {k!r} that is not a string"
            if (p := json_problem(item, f"{path}[{k!r}]")) is not None:
                return p
        return None
    return f"{path} is a {type(value).__name__}"


def resolve_tasks(specs: Sequence[str | Task[..., Any]]) -> dict[str, Task[..., Any]]:
    tasks: dict[str, Task[..., Any]] = {}
    modules = [s for s in specs if isinstance(s, str)]
    tasks.update(load_tasks(modules) if modules else {})
    for spec in specs:
        if isinstance(spec, Task):
            tasks[spec.name] = spec
        elif not isinstance(spec, str):
            raise TaskNotFound(f"tasks must be module names or pgq tasks, got {spec!r}")
    return tasks
