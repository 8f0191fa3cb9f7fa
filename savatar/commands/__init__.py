"""The `savatar` subcommands, one module per group; savatar.cli wires them into one parser."""
