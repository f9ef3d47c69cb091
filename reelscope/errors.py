"""The one exception tree of reelscope.

    ReelscopeError                  every error reelscope raises on purpose
    ├── ConfigError                 a setting has an invalid value
    ├── InputError                  the user's input cannot be analyzed
    │   ├── InputNotFoundError      missing path, or a directory
    │   ├── UnsupportedMediaError   not a video (text, image, PDF, audio only...)
    │   ├── CorruptMediaError       looks like a video but is truncated or damaged
    │   └── LimitExceededError      over a duration / resolution / file-size limit
    ├── ModelError                  a model's files are missing, damaged or fail to load
    ├── EngineError                 building, loading or running an engine failed
    └── StoreError                  the database cannot be reached or written
        └── NotFoundError           no stored video or reference with that id

Library errors (PyAV, onnxruntime, ctranslate2, SQLAlchemy) are translated at
the boundary with ``raise ... from exc`` so callers catch one tree.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "CorruptMediaError",
    "EngineError",
    "InputError",
    "InputNotFoundError",
    "LimitExceededError",
    "ModelError",
    "NotFoundError",
    "ReelscopeError",
    "StoreError",
    "UnsupportedMediaError",
]


class ReelscopeError(Exception):
    """Base of every error reelscope raises on purpose; ``str()`` is one clear line."""


class ConfigError(ReelscopeError):
    pass


class InputError(ReelscopeError):
    pass


class InputNotFoundError(InputError):
    pass


class UnsupportedMediaError(InputError):
    pass


class CorruptMediaError(InputError):
    pass


class LimitExceededError(InputError):
    pass


class ModelError(ReelscopeError):
    pass


class EngineError(ReelscopeError):
    pass


class StoreError(ReelscopeError):
    pass


class NotFoundError(StoreError):
    pass
