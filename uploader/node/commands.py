"""The registry through which each node adds its commands to ``uploader``.

A node declares a :class:`NodeCommands` and names it in its package's ``pyproject.toml`` under
the entry-point group ``uploader.commands``; the core's CLI reads the group and knows nothing
else of any node. A node's verbs are ``uploader NODE VERB ...`` (``uploader identifiable
status --config F``); ``uploader NODE --config F`` runs the node. The shorter spellings
``uploader VERB ... --config F`` keep working: a verb only one node has goes to it, and a verb
several have goes to the node the configuration file is for, which is the one that has a
section no other node has (``scp`` or ``intake``, say), or else the only one whose settings
accept the file; when that cannot be told, the message says to name the node.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING

from uploader.errors import ConfigError

if TYPE_CHECKING:  # pydantic and YAML load only when a configuration is read (fast start-up)
    from pydantic import BaseModel

GROUP = "uploader.commands"
RUN = "run"  # the verb `uploader NODE --config F` means


@dataclass(frozen=True)
class Verb:
    """One command of a node: ``uploader NODE NAME ...``.

    ``arguments`` adds its options to its parser; ``run`` gets the parsed arguments (with
    ``command`` set to the verb's name and ``node`` to the node's) and returns the exit code.
    """

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    allow_abbrev: bool = True  # False where an abbreviation would be a risk (--password...)


@dataclass(frozen=True)
class NodeCommands:
    """What a node registers: its name (the command), its verbs (one is ``run``), and the
    model of its configuration file (a function, so that it is imported only when needed)."""

    name: str
    help: str
    verbs: Sequence[Verb]
    config_model: Callable[[], type[BaseModel]]

    def verb(self, name: str) -> Verb | None:
        """The verb called ``name``, or None."""
        return next((v for v in self.verbs if v.name == name), None)


def registered() -> list[NodeCommands]:
    """Every node installed, by name (each entry point of ``uploader.commands`` once)."""
    found: dict[str, NodeCommands] = {}
    for point in entry_points(group=GROUP):
        if point.name not in found:
            commands = point.load()
            if not isinstance(commands, NodeCommands):
                raise TypeError(f"entry point {point.value} is not a NodeCommands")
            found[point.name] = commands
    return [found[name] for name in sorted(found)]


def shared_verbs(nodes: Sequence[NodeCommands]) -> dict[str, list[NodeCommands]]:
    """Each verb (but ``run``) with the nodes that have it."""
    owners: dict[str, list[NodeCommands]] = {}
    for node in nodes:
        for verb in node.verbs:
            if verb.name != RUN:
                owners.setdefault(verb.name, []).append(node)
    return owners


def add_node_parsers(sub: argparse._SubParsersAction, nodes: Sequence[NodeCommands]) -> None:  # type: ignore[type-arg]
    """``uploader NODE [VERB] ...`` for each node, and ``uploader VERB --config F`` for each
    verb (what the short spelling shows when it is given without ``--config``, or ``--help``)."""
    for node in nodes:
        p = sub.add_parser(node.name, help=node.help)
        p.add_argument("--config", type=Path, help="the node's YAML configuration (runs it)")
        verbs = p.add_subparsers(dest="verb", metavar="VERB")
        for verb in node.verbs:
            vp = verbs.add_parser(verb.name, help=verb.help, allow_abbrev=verb.allow_abbrev)
            verb.arguments(vp)
    for name, owners in shared_verbs(nodes).items():
        spelled = " or ".join(f"`uploader {n.name} {name}`" for n in owners)
        p = sub.add_parser(name, help=f"{owners[0].verb(name).help} ({spelled})")  # type: ignore[union-attr]
        p.add_argument("--config", type=Path, required=True, help="the node's YAML configuration")
        p.epilog = f"The same as {spelled}; see its --help for every option."


def route(argv: list[str], nodes: Sequence[NodeCommands], reserved: set[str]) -> list[str]:
    """``uploader VERB ...`` rewritten as ``uploader NODE VERB ...`` (anything else unchanged;
    a name in ``reserved``, the core's own commands, is never a node's verb).

    Raises:
        ConfigError: the configuration is unreadable, or which node it is for cannot be told.
    """
    at = next((i for i, arg in enumerate(argv) if not arg.startswith("-")), None)
    if at is None or argv[at] in reserved:
        return argv
    owners = shared_verbs(nodes).get(argv[at], [])
    if len(owners) == 1:
        return [*argv[:at], owners[0].name, *argv[at:]]
    config = _config_argument(argv[at + 1 :])
    if not owners or config is None:
        return argv  # not a node's verb; or the parser says --config is needed
    node = node_for(Path(config), argv[at], owners, nodes)
    return [*argv[:at], node.name, *argv[at:]]


def _config_argument(args: list[str]) -> str | None:
    for i, arg in enumerate(args):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if len(arg) > 4 and "--config".startswith(arg) and i + 1 < len(args):
            return args[i + 1]
    return None


def node_for(
    config: Path, verb: str, owners: Sequence[NodeCommands], nodes: Sequence[NodeCommands]
) -> NodeCommands:
    """The node (of ``owners``) whose configuration ``config`` is.

    Raises:
        ConfigError: unreadable, not YAML, or it cannot be told (the message says what to type).
    """
    from uploader.node.config import read_mapping

    data = read_mapping(config)
    models = {n.name: n.config_model() for n in nodes}
    fields = {name: set(model.model_fields) for name, model in models.items()}
    own = [n for n in nodes if set(data) & _only_in(n.name, fields)]
    if len(own) == 1:
        if own[0] not in owners:
            raise ConfigError(f"{config}: the {own[0].name} node has no `{verb}` command")
        return own[0]
    if not own:
        fits = [n for n in owners if _accepts(models[n.name], data)]
        if len(fits) == 1:
            return fits[0]
    spelled = " or ".join(f"`uploader {n.name} {verb}`" for n in owners)
    raise ConfigError(f"{config}: cannot tell which node this configuration is for: use {spelled}")


def _only_in(name: str, fields: dict[str, set[str]]) -> set[str]:
    """The sections only node ``name`` has."""
    others: set[str] = set()
    for other, names in fields.items():
        if other != name:
            others |= names
    return fields[name] - others


def _accepts(model: type[BaseModel], data: dict[str, object]) -> bool:
    from pydantic import ValidationError

    try:
        model.model_validate(data)
    except ValidationError:
        return False
    return True


def run(args: argparse.Namespace, nodes: Sequence[NodeCommands]) -> int | None:
    """Run a node's verb, or return None when ``args`` is not a node's command."""
    node = next((n for n in nodes if n.name == args.command), None)
    if node is None:
        return None
    verb = node.verb(getattr(args, "verb", None) or RUN)
    if verb is None:
        raise ConfigError(f"the {node.name} node has no `{args.verb}` command")
    if getattr(args, "config", None) is None:
        raise ConfigError(f"{node.name}: give --config FILE (the node's configuration)")
    args.node, args.command = node.name, verb.name
    return verb.run(args)


def config_argument(p: argparse.ArgumentParser) -> None:
    """The ``--config FILE`` every verb takes."""
    p.add_argument("--config", type=Path, required=True, help="the node's YAML configuration")
