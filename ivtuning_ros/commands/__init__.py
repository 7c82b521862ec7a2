"""The `ivtuning` command line: `cli` (the entry point, with info, convert, export, bench and
demo) and one module per other subcommand, named after it and imported only when it runs
(`cli.COMMAND_MODULES`). What the commands compute lives in the library packages beside."""
