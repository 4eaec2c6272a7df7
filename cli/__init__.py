"""The `tend` command: operators' tools, clients of the services and their schemas."""
