"""Browser tests: headless Chromium on pages served by runserver --livereload."""
