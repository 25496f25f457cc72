"""vipa: referring image segmentation with Visual Informative Part Attention.

Importing the package is cheap on purpose: heavy modules (torch, timm,
transformers) load only when a command needs them.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vipa")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
