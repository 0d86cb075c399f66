"""Strategy comparison grids (``funcgrad compare``): placeholder until the grid runner lands."""

from funcgrad.errors import ConfigError


def run_compare(config_path, *, quiet: bool = False) -> int:
    """Run a comparison grid described by a TOML file."""
    raise ConfigError("funcgrad compare is not available yet")
