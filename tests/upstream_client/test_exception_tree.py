"""The exception tree drawn in the package docstring is the tree of the classes."""

from __future__ import annotations

import re

import upstream_client as uc

# A class name after the box-drawing prefix; its column says its depth (four per level).
_NODE = re.compile(r"^[ │├└─]*(?P<name>[A-Z][A-Za-z]+Error)\b")


def _drawn_tree() -> dict[str, str | None]:
    """Class name → parent name, read from the box drawing in ``upstream_client.__doc__``."""
    block = (uc.__doc__ or "").split("Exceptions::", 1)[1].split("\n\n", 2)[1]
    parents: dict[str, str | None] = {}
    path: list[str] = []
    for line in block.splitlines():
        match = _NODE.match(line.removeprefix("    "))
        if match is None:
            continue  # a continuation line of a description
        depth = match.start("name") // 4
        del path[depth:]
        parents[match["name"]] = path[-1] if path else None
        path.append(match["name"])
    return parents


def _class_tree() -> dict[str, str | None]:
    tree: dict[str, str | None] = {}
    for name in uc.__all__:
        value = getattr(uc, name)
        if isinstance(value, type) and issubclass(value, uc.UpstreamError):
            base = value.__bases__[0]
            tree[name] = None if value is uc.UpstreamError else base.__name__
    return tree


def test_the_docstring_draws_every_exception_class_under_its_real_parent() -> None:
    drawn = _drawn_tree()
    assert drawn["UpstreamError"] is None
    assert drawn["APITimeoutError"] == "APIConnectionError"
    assert drawn == _class_tree()


def test_the_tree_is_drawn_once() -> None:
    import upstream_client._exceptions as exceptions

    assert "├──" not in (exceptions.__doc__ or "")
