"""End-to-end tests: manage.py runserver in a subprocess on a copy of testproject/."""
