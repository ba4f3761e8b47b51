"""Built-in module types: manifest name -> module holding `run(ctx)` (imported only when used)."""

BUILTIN_MODULES: dict[str, str] = {
    "exec": "cidag.modules.exec",
}
