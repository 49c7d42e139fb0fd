"""The `kis-stream` command: one entry point, subcommands loaded on first use.

Subcommands live next to the code they drive (producer/, simulator/, processors/), so the
CLI only names them here; importing Faust or the simulator is paid only by the command
that needs it.
"""

from __future__ import annotations

import importlib

import click

# name -> "module:attribute" of a click command or group.
COMMANDS: dict[str, str] = {
    "services": "kis_stream.services:services",
    "bench": "kis_stream.bench:bench",
    "sim": "simulator.cli:sim",
    "demo": "kis_stream.demo:demo",
    "produce": "producer.service:produce",
    "redecode": "producer.redecode:redecode_command",
    "tail": "kis_stream.tail:tail",
    "decode": "producer.decode_cli:decode_command",
    "schemas": "producer.decode_cli:schemas_command",
    "process": "processors.cli:process",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported when they are invoked or listed."""

    def __init__(self, *args: object, lazy: dict[str, str], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self._lazy:
            module_name, attr = self._lazy[cmd_name].split(":")
            command = getattr(importlib.import_module(module_name), attr)
            if not isinstance(command, click.Command):
                raise TypeError(f"{self._lazy[cmd_name]} is not a click command")
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kis-stream")
def main() -> None:
    """kis-stream: KIS OpenAPI real-time data into Kafka (Avro), and derived streams."""


if __name__ == "__main__":
    main()
