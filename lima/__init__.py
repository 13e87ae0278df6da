"""LIMA Studio's ground floor: the state directory, the chat format, the client to the service, the SQLite store."""
