"""Finding actions: the built-ins, every installed distribution's `switchboard.actions` entry
points (`importlib.metadata`, the packaging spec's entry-point mechanism), and the modules
named in `BOT_ACTION_MODULES`.

An entry point names a module (every `@action` in it is registered) or one decorated function:

```toml
[project.entry-points."switchboard.actions"]
tickets = "switchboard_tickets.actions"
```

Two actions with one name fail at start-up with both origins named: which one should run is
the deployer's call, not the import order's.
"""

from __future__ import annotations

import importlib
import types
from collections.abc import Iterable, Iterator
from dataclasses import replace
from importlib.metadata import EntryPoint, entry_points

from actions.spec import ActionSpec, spec_of
from bot.errors import ConfigError
from bot.log import get_logger

log = get_logger("actions")
GROUP = "switchboard.actions"
#: Names no action may take: the commands the bot itself answers.
RESERVED = {"ask": "`/ask` and `!ask` send a question to the model",
            "start": "Telegram's `/start` runs `help`"}


class ActionConflict(ConfigError):
    """Two actions share a name."""


class ActionLoadError(ConfigError):
    """An entry point or module could not be imported, or holds no action."""


def specs_in(obj: object) -> list[ActionSpec]:
    """The actions a module holds (in definition order), or the one a function carries."""
    if isinstance(obj, types.ModuleType):
        return [s for value in vars(obj).values() if (s := spec_of(value)) is not None]
    spec = spec_of(obj)
    return [spec] if spec is not None else []


class Registry:
    """Actions by name, in registration order."""

    def __init__(self) -> None:
        self._specs: dict[str, ActionSpec] = {}

    def add(self, spec: ActionSpec, origin: str) -> None:
        """Raises: ActionConflict naming both origins when the name is taken, or naming the
        origin when the name is reserved (`RESERVED`)."""
        if spec.name in RESERVED:
            raise ActionConflict(
                f"{origin} defines an action named {spec.name!r}, which is reserved "
                f"({RESERVED[spec.name]}); rename it")
        existing = self._specs.get(spec.name)
        if existing is not None:
            if existing.func is spec.func:
                return  # the same function reached twice (a module and its entry point)
            raise ActionConflict(
                f"two actions are named {spec.name!r}: one from {existing.origin}, one from "
                f"{origin}; remove or rename one of them")
        self._specs[spec.name] = replace(spec, origin=origin)

    def get(self, name: str) -> ActionSpec | None:
        return self._specs.get(name)

    def __iter__(self) -> Iterator[ActionSpec]:
        return iter(list(self._specs.values()))

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs


def _entry_point_origin(ep: EntryPoint) -> str:
    dist = f" ({ep.dist.name} {ep.dist.version})" if ep.dist is not None else ""
    return f"entry point {ep.name} = {ep.value}{dist}"


def discover(builtins: Iterable[ActionSpec], modules: Iterable[str] = (),
             use_entry_points: bool = True) -> Registry:
    """Build the registry: built-ins, then entry points (sorted by name), then `modules`.

    Raises:
        ActionConflict: two actions share a name.
        ActionLoadError: an entry point or module fails to import or holds no action.
    """
    registry = Registry()
    for spec in builtins:
        registry.add(spec, "builtin")
    if use_entry_points:
        for ep in sorted(entry_points(group=GROUP), key=lambda e: (e.name, e.value)):
            origin = _entry_point_origin(ep)
            try:
                loaded = ep.load()
            except Exception as exc:
                raise ActionLoadError(f"{origin} failed to load: {exc!r}") from exc
            found = specs_in(loaded)
            if not found:
                raise ActionLoadError(f"{origin} holds no @action")
            for spec in found:
                registry.add(spec, origin)
    for name in modules:
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            raise ActionLoadError(f"BOT_ACTION_MODULES: module {name} failed to import: "
                                  f"{exc!r}") from exc
        found = specs_in(module)
        if not found:
            raise ActionLoadError(f"BOT_ACTION_MODULES: module {name} holds no @action")
        for spec in found:
            registry.add(spec, f"module {name}")
    log.info("actions registered", count=len(registry), names=[s.name for s in registry])
    return registry
