"""``python -m tesseract``: the same as the ``tesseract`` command."""

from tesseract.cli import main

raise SystemExit(main())
