"""The tool's version: a leaf module, so that any layer (the checkpoint's metadata, the HTTP
User-Agent, ``mlp --version``) can read it without importing the package's ``__init__``."""

__version__ = "0.1.0"
