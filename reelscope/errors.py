"""The one exception tree of reelscope.

    ReelscopeError                  every error reelscope raises on purpose
    ├── ConfigError                 a setting has an invalid value
    ├── InputError                  the user's input cannot be analyzed
    │   ├── InputNotFoundError      missing path, or a directory
    │   ├── UnsupportedMediaError   not a video (text, image, PDF, audio only...)
    │   ├── EmptyInputError         a file or upload of 0 bytes
    │   ├── CorruptMediaError       looks like a video but is truncated or damaged
    │   └── LimitExceededError      over a duration / resolution / file-size limit
    │       └── UploadTooLargeError an upload over the size limit, stopped while it arrives
    ├── ModelError                  a model's files are missing, damaged or fail to load
    ├── EngineError                 building, loading or running an engine failed
    │   ├── UnsupportedBuildError   a backend/precision/source combination that cannot be built
    │   ├── EngineFileError         not an engine file, or a truncated or corrupt one
    │   ├── EngineMismatchError     an engine built for another device or other versions
    │   ├── ShapeError              an input outside the engine's shapes or profiles
    │   ├── AccuracyGateError       a build less accurate than the fp32 reference allows
    │   └── DeviceError             the device failed a call (a launch failure, a lost GPU)
    │       └── DeviceMemoryError   the device ran out of memory for a call
    ├── StoreError                  the database cannot be reached or written
    │   └── NotFoundError           no stored video or reference with that id
    └── ServiceError                refused by the HTTP service
        ├── AuthError               no API key, or an unknown or revoked one
        └── TooManyJobsError        the key already has its limit of jobs in flight

The HTTP layer maps this tree to status codes in one place
(``reelscope.service.errors``).

Library errors (PyAV, onnxruntime, torch, SQLAlchemy) are translated at the
boundary with ``raise ... from exc`` so callers catch one tree; a device's errors
where a model is run (``reelscope.engine.base.Runner.infer``).
"""

from __future__ import annotations

__all__ = [
    "AccuracyGateError",
    "AuthError",
    "ConfigError",
    "CorruptMediaError",
    "DeviceError",
    "DeviceMemoryError",
    "EmptyInputError",
    "EngineError",
    "EngineFileError",
    "EngineMismatchError",
    "InputError",
    "InputNotFoundError",
    "LimitExceededError",
    "ModelError",
    "NotFoundError",
    "ReelscopeError",
    "ServiceError",
    "ShapeError",
    "StoreError",
    "TooManyJobsError",
    "UnsupportedBuildError",
    "UnsupportedMediaError",
    "UploadTooLargeError",
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


class EmptyInputError(InputError):
    pass


class LimitExceededError(InputError):
    pass


class UploadTooLargeError(LimitExceededError):
    pass


class ModelError(ReelscopeError):
    pass


class EngineError(ReelscopeError):
    pass


class UnsupportedBuildError(EngineError):
    pass


class EngineFileError(EngineError):
    pass


class EngineMismatchError(EngineError):
    """``differences`` lists what differs, one ``field: built for X, here Y`` per entry."""

    def __init__(self, message: str, differences: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.differences = differences


class ShapeError(EngineError):
    pass


class AccuracyGateError(EngineError):
    pass


class DeviceError(EngineError):
    pass


class DeviceMemoryError(DeviceError):
    pass


class StoreError(ReelscopeError):
    pass


class NotFoundError(StoreError):
    pass


class ServiceError(ReelscopeError):
    pass


class AuthError(ServiceError):
    pass


class TooManyJobsError(ServiceError):
    pass
