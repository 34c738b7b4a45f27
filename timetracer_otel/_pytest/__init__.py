"""The pytest plugin's parts; the plugin itself (hooks, options, fixtures) is :mod:`timetracer_otel.pytest_plugin`."""
