import sys

if sys.argv[1:2] == ["run"]:
    # Before any import: a SIGTERM while the manifests are read still gets a record (signals.py).
    from .signals import latch

    latch()

from .cli import main  # noqa: E402

sys.exit(main())
