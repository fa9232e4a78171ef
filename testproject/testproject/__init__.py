"""The runserver_plus test project's configuration package."""
