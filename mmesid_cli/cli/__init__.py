"""The command line: one thin typer module per subcommand (parse, load, call, save, report)."""
