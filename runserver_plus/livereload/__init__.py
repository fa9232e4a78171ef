"""Live browser reload: the worker's event stream and the browser's client script."""
