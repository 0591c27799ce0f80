"""The toolkit's version, recorded in every output's provenance."""

from importlib import metadata

DIST_NAME = "videoqa-toolkit"


def toolkit_version() -> str:
    """Installed distribution version, or ``"0+unknown"`` when running from an uninstalled tree."""
    try:
        return metadata.version(DIST_NAME)
    except metadata.PackageNotFoundError:
        return "0+unknown"
