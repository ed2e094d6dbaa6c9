"""One registry of model sources, in the shape of timm's ``_registry.py``.

A source is registered where it is defined, with ``@register_model`` on its factory
(``factory(pretrained: bool) -> LoadedModel``); ``create(name)``, ``list_models(pattern)``,
``is_model(name)`` and the picker's entries all read the same dict, so no other file
lists the models and adding one is adding one decorated function.

timm registers one function per architecture; fvaudit also has open-ended sources (any
torchvision classifier, any timm architecture as ``timm:<name>``), registered once as a
*family*: a predicate that recognises its names and a factory that takes the name.
Exact entries are looked up first, then families in the order they were registered.

Pure python: the factories import torch, torchvision or timm when they run.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable


class UnknownModel(ValueError):
    """No entry and no family knows the name (the message lists what is known)."""


@dataclass(frozen=True)
class ModelEntry:
    """One named model of the picker: what builds it and how to describe it."""

    name: str
    factory: Callable[[bool], Any]       # pretrained -> LoadedModel
    source: str                          # "fvaudit demo", "PyPI", "torchvision", "timm"
    offline: bool                        # weights available without a download
    description: str
    listed: bool = True                  # shown by the picker (every entry is creatable)

    def as_dict(self) -> dict:
        return {"name": self.name, "source": self.source, "offline": self.offline, "description": self.description}


@dataclass(frozen=True)
class ModelFamily:
    """Open-ended names one source understands (``timm:<architecture>``, a torchvision name)."""

    name: str                                   # e.g. "timm"
    knows: Callable[[str], bool]                # cheap: must not build anything
    factory: Callable[[str, bool], Any]         # (name, pretrained) -> LoadedModel
    names: Callable[[], Iterable[str]] = field(default=lambda: ())   # everything it can build (may be long)
    hint: str = ""                              # for error messages: "any torchvision classifier name"
    available: Callable[[], bool] = field(default=lambda: True)     # its library is installed


class ModelRegistry:
    """Entries by exact name plus families; ``create`` is the one factory."""

    def __init__(self) -> None:
        self._entries: dict[str, ModelEntry] = {}
        self._families: list[ModelFamily] = []

    # ------------------------------------------------------------ registration
    def register_model(self, name: str | None = None, *, source: str, description: str, offline: bool = False,
                       listed: bool = True):
        """Decorator: ``@register_model("fmnist-cnn", source=..., description=...)`` on a
        ``factory(pretrained) -> LoadedModel``; the function's name when ``name`` is None."""

        def deco(fn: Callable[[bool], Any]) -> Callable[[bool], Any]:
            key = name or fn.__name__
            if key in self._entries:
                raise ValueError(f"model {key!r} is registered twice")
            self._entries[key] = ModelEntry(key, fn, source, offline, description, listed)
            return fn

        return deco

    def register_family(self, family: ModelFamily) -> ModelFamily:
        if any(f.name == family.name for f in self._families):
            raise ValueError(f"model family {family.name!r} is registered twice")
        self._families.append(family)
        return family

    # ------------------------------------------------------------ lookup
    def entry(self, name: str) -> ModelEntry | None:
        return self._entries.get(name)

    def family_of(self, name: str) -> ModelFamily | None:
        for fam in self._families:
            if fam.available() and fam.knows(name):
                return fam
        return None

    def is_model(self, name: str) -> bool:
        """Whether ``create(name)`` would find a source (it may still fail on weights)."""
        return isinstance(name, str) and bool(name) and (name in self._entries or self.family_of(name) is not None)

    def create(self, name: str, pretrained: bool = True):
        """Build the model ``name``: an exact entry, else the first family that knows it."""
        entry = self._entries.get(name)
        if entry is not None:
            return entry.factory(pretrained)
        fam = self.family_of(name)
        if fam is not None:
            return fam.factory(name, pretrained)
        raise UnknownModel(f"unknown model {name!r}; {self.known_message()}")

    def list_models(self, pattern: str | None = None, families: bool = False) -> list[str]:
        """Registered names (fnmatch ``pattern``, like timm's); ``families=True`` adds every
        name an installed family can build (thousands for timm)."""
        names = [e.name for e in self._entries.values() if families or e.listed]
        if families:
            for fam in self._families:
                if fam.available():
                    names.extend(n for n in fam.names() if n not in self._entries)
        return [n for n in names if pattern is None or fnmatch.fnmatchcase(n, pattern)]

    def entries(self, pattern: str | None = None) -> list[ModelEntry]:
        """The picker's entries (listed ones), in registration order."""
        return [self._entries[n] for n in self.list_models(pattern)]

    def known_message(self) -> str:
        hints = [f.hint for f in self._families if f.hint and f.available()]
        return ("known models: " + ", ".join(self.list_models())
                + (f" ({'; '.join(hints)})" if hints else "") + ", each optionally with a local checkpoint")


#: the process-wide registry the engine's sources register into (``engine/models/loading.py``)
REGISTRY = ModelRegistry()
register_model = REGISTRY.register_model
register_family = REGISTRY.register_family
create = REGISTRY.create
list_models = REGISTRY.list_models
is_model = REGISTRY.is_model
