"""The shipped configs, installed as the package `vireid.configs` (see pyproject.toml) so that a wheel has them.

`vireid.config.load_config("configs/<dataset>/<method>.yaml")` finds them from any directory.
"""
