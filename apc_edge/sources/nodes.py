"""Reading and writing camera (GenICam) nodes with errors that name the node.

Only called once a camera is open, so pypylon is already importable here; it
is still imported inside the functions to keep ``apc_edge.sources`` free of it.
"""
from __future__ import annotations

from typing import Any

from .base import SourceError


def pylon_message(exc: BaseException) -> str:
    """A pylon exception's text without its trailing "XException thrown (file ...)" part."""
    text = str(exc)
    head, sep, tail = text.rpartition(" : ")
    return head if sep and "thrown" in tail else text


def get_node(node_map, name: str, *, required: bool = True):
    """The node ``name``, or ``None`` (``required=False``) / SourceError when the camera lacks it."""
    node = node_map.GetNode(name)
    if node is None or not node.IsValid():
        if required:
            raise SourceError(f"camera has no node {name!r}")
        return None
    return node


def is_writable(node_map, name: str) -> bool:
    node = get_node(node_map, name, required=False)
    return node is not None and node.IsWritable()


def enum_entries(node_map, name: str) -> list[str]:
    """Symbolic values an enumeration node currently offers (empty when absent)."""
    node = get_node(node_map, name, required=False)
    if node is None or not hasattr(node, "GetSymbolics"):
        return []
    return list(node.GetSymbolics())


def set_node(node_map, name: str, value: Any = None) -> None:
    """Write ``value`` to node ``name`` (commands are executed, ``value`` ignored).

    Raises SourceError naming the node when it is missing, not writable, the value
    is not one of an enumeration's entries, or the camera rejects it.
    """
    from pypylon import genicam

    node = get_node(node_map, name)
    if not node.IsWritable():
        raise SourceError(f"camera node {name!r} is not writable now")
    try:
        if hasattr(node, "Execute"):
            node.Execute()
            return
        if hasattr(node, "GetSymbolics"):
            entries = list(node.GetSymbolics())
            if str(value) not in entries:
                raise SourceError(f"camera node {name!r} has no entry {value!r}; available: {entries}")
            node.SetValue(str(value))
            return
        kind = type(node).__name__
        if kind.startswith("Integer"):
            value = int(value)
        elif kind.startswith("Float"):
            value = float(value)
        elif kind.startswith("Boolean"):
            value = value.strip().lower() in ("1", "true", "on", "yes") if isinstance(value, str) else bool(value)
        elif kind.startswith("String"):
            value = str(value)
        node.SetValue(value)
    except genicam.GenericException as exc:
        raise SourceError(f"cannot set camera node {name!r} to {value!r}: {pylon_message(exc)}") from exc


def set_first(node_map, names: tuple[str, ...], value: Any) -> str:
    """Write ``value`` to the first of ``names`` the camera has; returns the name used."""
    for name in names:
        if get_node(node_map, name, required=False) is not None:
            set_node(node_map, name, value)
            return name
    raise SourceError(f"camera has no node {names[0]!r} (also tried {list(names[1:])})")


def set_if_writable(node_map, name: str, value: Any) -> bool:
    """Write ``value`` only when node ``name`` exists and is writable; True when written."""
    if not is_writable(node_map, name):
        return False
    set_node(node_map, name, value)
    return True
