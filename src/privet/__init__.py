"""privet: train and serve AI models on sensitive data without exposing it."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("privet")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
