"""The data-source registry: ``SOURCES.get(name)`` is a :class:`~mia_ray.data.base.Source` subclass."""

from __future__ import annotations

from collections.abc import Callable

from ..registry import Registry

SOURCES: Registry[type] = Registry("data source")


def register_source(name: str) -> Callable[[type], type]:
    """Class decorator: register a Source subclass under ``name`` and set its ``name`` attribute."""

    def deco(cls: type) -> type:
        cls.name = name
        return SOURCES.register(name)(cls)

    return deco
