"""One module per subcommand (see `sparselens.cli.main`)."""
