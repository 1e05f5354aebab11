"""The `anrc` command-line tool (see `anrc --help`)."""
