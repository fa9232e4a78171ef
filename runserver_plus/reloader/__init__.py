"""The reloader: a supervisor owning the socket and the watcher, and its workers."""
