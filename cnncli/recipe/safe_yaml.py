"""YAML as a recipe may be written: safe types only, no duplicate keys, no alias bombs.

PyYAML's SafeLoader runs no code, but it lets a later key silently replace an earlier one (a
typo that loses a setting) and it builds an alias bomb (`&a [*b, *b, ...]` nested ten deep)
as a small shared graph that every later walk expands to billions of nodes. StrictLoader
refuses both, with the line, before anything walks the data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, SequenceNode

from cnncli.errors import CnncliError
from cnncli.files.reading import read_limited
from cnncli.limits import MAX_RECIPE_BYTES, MAX_YAML_NODES


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping and documents whose aliases
    expand past MAX_YAML_NODES nodes (or into themselves)."""

    def construct_mapping(self, node: Node, deep: bool = False) -> dict:
        if isinstance(node, MappingNode):
            seen: set = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:  # an unhashable key: SafeLoader reports it below
                    continue
                if duplicate:
                    raise ConstructorError(None, None, f"found the key {key!r} twice in one mapping",
                                           key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def get_single_node(self) -> Node | None:
        node = super().get_single_node()
        if node is not None:
            _check_expanded_size(node)
        return node


def _check_expanded_size(root: Node) -> None:
    """Count the nodes of `root` with every alias expanded, sharing the work between aliases of
    one anchor, and stop at the limit (or at an alias inside its own anchor)."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise ConstructorError(None, None, "an alias refers to the node that contains it", node.start_mark)
        open_nodes.add(key)
        total = 1
        if isinstance(node, SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, MappingNode):
            total += sum(size(name) + size(value) for name, value in node.value)
        open_nodes.discard(key)
        if total > MAX_YAML_NODES:
            raise ConstructorError(None, None, f"expands to more than {MAX_YAML_NODES:,} values "
                                               "(aliases repeat too much)", node.start_mark)
        sizes[key] = total
        return total

    size(root)


def parse_yaml(text: str, where: str) -> Any:
    """`text` as YAML data; errors name `where` and the line."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise CnncliError(f"{where}:{line} is not valid YAML ({getattr(error, 'problem', None) or error})") from None
    except RecursionError:
        raise CnncliError(f"{where}: nested too deeply to be a recipe") from None


def read_text(path: Path, what: str = "recipe") -> str:
    """A UTF-8 text file of at most MAX_RECIPE_BYTES, as text; a byte that is not UTF-8 is an
    error naming its line and column."""
    content = read_limited(path, MAX_RECIPE_BYTES, what)
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as error:
        line = content.count(b"\n", 0, error.start) + 1
        column = error.start - (content.rfind(b"\n", 0, error.start) + 1) + 1
        raise CnncliError(f"{path}: line {line} column {column}: byte 0x{content[error.start]:02x} is not "
                          f"UTF-8; save the {what} as UTF-8") from None
