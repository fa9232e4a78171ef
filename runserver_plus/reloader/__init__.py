"""The reloader: a supervisor that owns the socket and watches files, and its workers."""
