"""Admin registration of testapp's model."""

from __future__ import annotations

from django.contrib import admin

from testapp.models import Note


@admin.register(Note)
class NoteAdmin(admin.ModelAdmin):
    list_display = ("title", "created")
    search_fields = ("title", "body")
