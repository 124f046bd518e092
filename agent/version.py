"""The one place rumor's version is written (pyproject.toml reads it from here)."""

VERSION = "0.1.0"
