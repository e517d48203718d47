"""`@pgq.task`, the task registry, and checking args against a task's signature."""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, ParamSpec, TypeVar, overload

import orjson
import pydantic

from pgq._core.context import Context
from pgq._core.domain import DEFAULT_QUEUE, Backoff, check_queue_name
from pgq._core.errors import EnqueueError, TaskNotFound

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

    @property
    def typed(self) -> bool:
        """Whether any parameter has an annotation to check values against."""
        return self._signature.typed

    def args_fit(self, args: Mapping[str, Any]) -> bool:
        """True only if `args` are JSON and pass `check_args`: the fast path, by exact types.

        False decides nothing: then `json_problem` and `check_args` say what is wrong, or find
        that a value pydantic accepts (an IntEnum for an int) is fine after all.
        """
        return self._signature.fits(args)

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
        checks: dict[str, _Check | None],
    ) -> None:
        self.typed = typed
        self.name = name
        self.required = required
        self.allowed = allowed
        self.takes_kwargs = takes_kwargs
        self.ctx_param = ctx_param
        self.model = model
        # The fast path (`fits`): one exact-type check per parameter, None where only pydantic
        # can tell; a key the signature does not name is JSON-checked under **kwargs, else it
        # is left to the full check to reject.
        self.checks = checks
        self.extra_check: _Check | None = _is_json if takes_kwargs else None

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
            checks={param: _check_for(hint) for param, (hint, _) in fields.items()},
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

    def fits(self, args: Mapping[str, Any]) -> bool:
        """True only if `args` are JSON and pass `check_strict`, values checked by exact type.

        False decides nothing: the full check (`json_problem`, `check_strict`) then says what
        is wrong, or finds that a value pydantic accepts (an IntEnum for an int) is fine.
        """
        if not args:
            return not self.required  # pydantic does not validate defaults either
        checks = self.checks
        extra = self.extra_check
        for key, value in args.items():
            check = checks.get(key, extra)
            if check is None or not check(value):
                return False
        return not self.required or self.required <= args.keys()

    def check_strict(self, args: Mapping[str, Any]) -> None:
        problem = self.problem(args)
        if problem is not None:
            raise EnqueueError(f"args for {self.name} do not fit its signature: {problem}")
        if not self.typed:
            return  # names checked above; no annotation left to check values against
        # Validate what the task will really receive: the values as JSON decodes them.
        text = encode_args(self.name, args)  # fails first, fast path or not (an int too large)
        if self.fits(args):
            return
        decoded = orjson.loads(text)
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


# -- the fast path: exact-type checks for simple annotations -------------------------------------
#
# Each check answers True only for a value that is JSON (json_problem finds nothing) and that
# pydantic's strict mode accepts for the annotation once orjson has encoded and decoded it. It
# may answer False for a value pydantic would accept; the full check then runs. Types are
# compared exactly (`type(v) is int`), so bool is no int and no float here, as in strict mode;
# an int is a float, as in strict mode; a tuple is a list, as it is once JSON decodes it.

_Check = Callable[[object], bool]


def _is_json(value: object) -> bool:
    """Any JSON value, by exact type: what an `Any` (or unannotated) parameter accepts."""
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return True
    if t is float:
        return math.isfinite(value)  # type: ignore[arg-type]
    if t is list or t is tuple:
        return all(map(_is_json, value))  # type: ignore[call-overload]
    if t is dict:
        d: dict[object, object] = value  # type: ignore[assignment]
        return all(type(k) is str for k in d) and all(map(_is_json, d.values()))
    return False


def _is_int(value: object) -> bool:
    return type(value) is int


def _is_float(value: object) -> bool:
    t = type(value)
    return t is int or (t is float and math.isfinite(value))  # type: ignore[arg-type]


def _is_str(value: object) -> bool:
    return type(value) is str


def _is_bool(value: object) -> bool:
    return type(value) is bool


def _is_none(value: object) -> bool:
    return value is None


_SCALARS: dict[object, _Check] = {
    Any: _is_json,
    int: _is_int,
    float: _is_float,
    str: _is_str,
    bool: _is_bool,
    type(None): _is_none,
    None: _is_none,
}


def _check_for(hint: object) -> _Check | None:
    """The fast check for `hint`, or None when only pydantic can tell (enums, tuples, datetimes,
    models, TypedDicts, sets, abstract collections, ...)."""
    try:
        scalar = _SCALARS.get(hint)
    except TypeError:  # an unhashable annotation
        return None
    if scalar is not None:
        return scalar
    origin = typing.get_origin(hint)
    params = typing.get_args(hint)
    if hint is list or (origin is list and not params):
        return _list_of(_is_json)
    if hint is dict or (origin is dict and not params):
        return _dict_of(_is_json)
    if origin is list and len(params) == 1:
        item = _check_for(params[0])
        return None if item is None else _list_of(item)
    if origin is dict and len(params) == 2 and params[0] is str:
        value = _check_for(params[1])
        return None if value is None else _dict_of(value)
    if origin is typing.Literal:
        return _literal(params)
    if origin is typing.Union or origin is types.UnionType:
        members = [_check_for(p) for p in params if p is not type(None)]
        if any(m is None for m in members):
            return None
        checks = [m for m in members if m is not None]
        either = checks[0] if len(checks) == 1 else _any_of(checks)
        return _or_none(either) if len(checks) < len(params) else either
    return None


def _list_of(item: _Check) -> _Check:
    def check(value: object) -> bool:
        t = type(value)
        return (t is list or t is tuple) and all(map(item, value))  # type: ignore[call-overload]

    return check


def _dict_of(item: _Check) -> _Check:
    def check(value: object) -> bool:
        if type(value) is not dict:
            return False
        return all(type(k) is str for k in value) and all(map(item, value.values()))

    return check


def _literal(values: tuple[object, ...]) -> _Check | None:
    """`Literal[...]` of strings, ints, bools and None: the same value of the same type."""
    if not all(type(v) in _LITERAL_TYPES for v in values):
        return None  # enum members, bytes, ...
    allowed = frozenset((type(v), v) for v in values)

    def check(value: object) -> bool:
        return type(value) in _LITERAL_TYPES and (type(value), value) in allowed

    return check


_LITERAL_TYPES = frozenset({str, int, bool, type(None)})


def _any_of(members: list[_Check]) -> _Check:
    def check(value: object) -> bool:
        return any(member(value) for member in members)

    return check


def _or_none(inner: _Check) -> _Check:
    def check(value: object) -> bool:
        return value is None or inner(value)

    return check


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


def encode_args(task_name: str, args: Mapping[str, Any]) -> bytes:
    """Args as JSON text; EnqueueError (naming the first bad value) for what JSON cannot hold."""
    try:
        return orjson.dumps(args)
    except TypeError as exc:
        problem = json_problem(args) or str(exc).lower()
        raise EnqueueError(f"args for {task_name} are not JSON: {problem}") from None


_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what pgq's JSON encoder (orjson) writes


def json_problem(value: object, path: str = "args") -> str | None:
    """Where `value` stops being JSON, or None. Used for the enqueue error message.

    >>> json_problem({"a": [1, {1}]})
    "args['a'][1] is a set"
    >>> json_problem({"n": 2**70})
    "args['n'] is 1180591620717411303424, an integer beyond 64 bits; pass it as a string"
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        if _INT_MIN <= value <= _INT_MAX:
            return None
        return f"{path} is {value!r}, an integer beyond 64 bits; pass it as a string"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{path} is not valid Unicode (it holds a lone surrogate)"
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
