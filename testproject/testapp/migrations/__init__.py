"""Migrations of testapp."""
