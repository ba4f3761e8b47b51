"""The metadata the last run resolved, as `cidag query` reads it: STATE_DIR/instance-data.json
(0644, secrets replaced by "<secret>"), or instance-data-sensitive.json (0600: root only)."""
from __future__ import annotations

from pathlib import Path

from .errors import CidagError, UsageError
from .state import INSTANCE_DATA, INSTANCE_DATA_SENSITIVE

PUBLIC = INSTANCE_DATA
SENSITIVE = INSTANCE_DATA_SENSITIVE
SECRET = "<secret>"
TABLE_VALUE_W = 72
WITHHELD = "secret values are only in the root-only instance-data-sensitive.json (--secrets); passwords not even there"
# What the sensitive file itself withholds: the engine never writes passwords at rest (issue 4).
NOT_KEPT = ("not kept: cidag writes no password to its state directory, not even to the root-only "
            "instance-data-sensitive.json; it is only used during the run")


class NotResolved(CidagError):
    """The asked capability did not resolve in the last run (exit 1, like a failed lookup)."""

    exit_code = 1


def read_instance_data(state_dir: str | Path, secrets: bool = False) -> dict:
    """The instance data file as a dict; raise UsageError with one line if it cannot be read."""
    from .state import MAX_STATE_FILE, load_json_file

    path = Path(state_dir) / (SENSITIVE if secrets else PUBLIC)
    data = load_json_file(path, MAX_STATE_FILE * 16, kind="instance data file",
                          missing="no resolved metadata (has cidag run? use --root or --state-dir)",
                          denied="permission denied: only root may read secrets (--secrets)" if secrets else None)
    if not isinstance(data, dict) or not isinstance(data.get("capabilities", {}), dict):
        raise UsageError(f"{path}: not instance data (expected {{\"instance_id\", \"capabilities\"}})")
    data.setdefault("capabilities", {})
    return data
