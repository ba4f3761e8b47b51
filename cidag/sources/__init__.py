"""Built-in source types: manifest name -> module holding `probe(ctx)` (imported only when used)."""

BUILTIN_SOURCES: dict[str, str] = {
    "static": "cidag.sources.static",
    "exec": "cidag.sources.exec",
}
