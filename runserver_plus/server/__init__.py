"""runserver_plus's own threaded HTTP/1.1 WSGI server."""
