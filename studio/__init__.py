"""The top floor: the `lima` command, which reaches every floor's subcommand (nothing imports it)."""
