"""LIMA Studio core: the `lima` command, the state directory, the chat format and the SQLite store."""
