"""Load YAML mapping files keeping the file, line and column of every value.

Mappings load into :class:`PosDict` / :class:`PosList`, plain ``dict``/``list``
subclasses that remember where each key and each value stood, so every later error
(structure, template syntax, unknown variable, failed render) can say ``file:line:col``.
Duplicate keys are errors (PyYAML keeps the last one silently).
"""

from __future__ import annotations

from typing import Any

import yaml

from ..errors import MappingSyntaxError

__all__ = ["Pos", "PosDict", "PosList", "load_yaml", "position_of"]

Pos = tuple[str, int, int]


class PosDict(dict):  # type: ignore[type-arg]
    """A dict that remembers positions: ``pos`` of itself, ``key_pos``/``value_pos`` per key."""

    pos: Pos
    key_pos: dict[Any, Pos]
    value_pos: dict[Any, Pos]


class PosList(list):  # type: ignore[type-arg]
    """A list that remembers its position and each element's (``item_pos``)."""

    pos: Pos
    item_pos: list[Pos]


class _Loader(yaml.SafeLoader):
    filename: str = "<string>"

    def _pos(self, node: yaml.Node) -> Pos:
        return (self.filename, node.start_mark.line + 1, node.start_mark.column + 1)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> PosDict:
    # Keys written in this mapping, as opposed to keys brought in by a `<<` merge:
    # an explicit key may override a merged one; two explicit ones are a mistake.
    explicit = {id(k) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"}
    loader.flatten_mapping(node)
    out = PosDict()
    out.pos = loader._pos(node)
    out.key_pos = {}
    out.value_pos = {}
    merged: set[Any] = set()
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise MappingSyntaxError(
                "a mapping key must be a plain value", **_kw(loader._pos(key_node))
            ) from None
        if key in out:
            if key in merged and id(key_node) in explicit:
                merged.discard(key)  # an explicit key overrides a merged one
            elif id(key_node) not in explicit:
                continue  # of several merged mappings, the first one's key wins
            else:
                first = out.key_pos[key]
                raise MappingSyntaxError(
                    f"duplicate key {key!r} (first defined at line {first[1]})",
                    **_kw(loader._pos(key_node)),
                )
        elif id(key_node) not in explicit:
            merged.add(key)
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_pos[key] = loader._pos(key_node)
        out.value_pos[key] = loader._pos(value_node)
    return out


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> PosList:
    out = PosList(loader.construct_object(child, deep=True) for child in node.value)
    out.pos = loader._pos(node)
    out.item_pos = [loader._pos(child) for child in node.value]
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def _kw(pos: Pos) -> dict[str, Any]:
    return {"file": pos[0], "line": pos[1], "column": pos[2]}


def load_yaml(text: str, filename: str) -> Any:
    """Parse YAML text into position-aware containers.

    :raises MappingSyntaxError: invalid YAML or a duplicate key, with file:line:col
    """
    loader = _Loader(text)
    loader.filename = filename
    try:
        return loader.get_single_data()
    except MappingSyntaxError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        col = mark.column + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise MappingSyntaxError(f"YAML syntax error: {problem}", file=filename, line=line, column=col) from exc
    except yaml.YAMLError as exc:
        raise MappingSyntaxError(f"YAML error: {exc}", file=filename) from exc
    finally:
        loader.dispose()


def position_of(doc: Any, path: tuple[Any, ...], *, key: bool = False) -> Pos | None:
    """The position of the value at ``path`` (a tuple of keys/indexes) in ``doc``.

    Falls back to the nearest enclosing container that has a position. With ``key=True``
    the position of the last key rather than its value.
    """
    best: Pos | None = getattr(doc, "pos", None)
    node = doc
    for i, step in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, PosDict) and step in node:
            best = (node.key_pos if key and last else node.value_pos).get(step, best)
            node = node[step]
        elif isinstance(node, PosList) and isinstance(step, int) and 0 <= step < len(node):
            best = node.item_pos[step]
            node = node[step]
        else:
            break
    return best
