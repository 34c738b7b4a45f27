"""``python -m timetracer_otel.cli``: the same as the ``timetracer`` command."""

from timetracer_otel.cli import main

main()
