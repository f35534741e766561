"""Test support: a recording SMTP sink, real-process helpers, polling waits."""
