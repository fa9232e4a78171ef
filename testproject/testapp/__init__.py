"""The test project's app: views that exercise every part of the server."""
