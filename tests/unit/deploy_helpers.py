"""What the compose and k8s tests share: the pinned Go tools and the CLI contract."""

from __future__ import annotations

import ast
import importlib
import subprocess
from collections.abc import Sequence
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[2]

# The CLI contract (shared/DESIGN.md): deployments may only run these subcommands.
CONTRACT_COMMANDS = frozenset(
    {"sim", "produce", "process", "decode", "schemas", "tail", "redecode", "bench", "demo"}
)


def go_tool(name: str) -> str:
    """Path of a pinned Go tool (built once into ~/.cache/kis-stream by scripts/go-tool)."""
    done = subprocess.run(
        [str(ROOT / "scripts" / "go-tool"), name], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"scripts/go-tool {name} failed:\n{done.stderr}"
    return done.stdout.strip()


def cli_commands() -> dict[str, str]:
    """COMMANDS of kis_stream/cli.py, read from the source (the single list of subcommands)."""
    tree = ast.parse((ROOT / "kis_stream" / "cli.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if any(isinstance(t, ast.Name) and t.id == "COMMANDS" for t in targets):
                value = ast.literal_eval(node.value)  # type: ignore[arg-type]
                assert isinstance(value, dict)
                return value
    raise AssertionError("kis_stream/cli.py has no COMMANDS dict")


def cli_problems(where: str, args: Sequence[str]) -> list[str]:
    """Why `kis-stream ARGS` would not start (empty when it would): the subcommand must be in
    the contract and registered, and its options must parse (unknown options, bad types)."""
    sub, rest = args[0], list(args[1:])
    problems = []
    if sub not in CONTRACT_COMMANDS:
        problems.append(f"{where}: {sub!r} is not a contract subcommand")
    commands = cli_commands()
    if sub not in commands:
        return [*problems, f"{where}: {sub!r} is not registered in kis_stream/cli.py COMMANDS"]
    module_name, attr = commands[sub].split(":")
    try:
        command = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        return [*problems, f"{where}: cannot load {commands[sub]}: {exc!r}"]
    if not isinstance(command, click.Command):
        return [*problems, f"{where}: {commands[sub]} is not a click command"]
    try:
        command.make_context(sub, rest)
    except click.ClickException as exc:
        problems.append(f"{where}: `kis-stream {' '.join(args)}` does not parse: {exc}")
    return problems
