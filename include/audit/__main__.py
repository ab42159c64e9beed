"""``python -m include.audit <command>``: see ``cli``."""

from .cli import main

raise SystemExit(main())
