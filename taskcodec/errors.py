"""Error hierarchy: one type per failure, each message says what went wrong and what to do."""


class TaskcodecError(Exception):
    """Base class for every error taskcodec raises on purpose."""


class DataError(TaskcodecError):
    """A dataset is missing, malformed, or an image in it cannot be read."""


class BitstreamError(TaskcodecError):
    """A compressed stream is corrupt, truncated, or of an unknown version."""


class CheckpointError(TaskcodecError):
    """A checkpoint or exported model file is missing, corrupt, or of the wrong kind or version."""


class ConfigError(TaskcodecError):
    """A configuration value is out of range or inconsistent."""


class CodecError(TaskcodecError):
    """A standard codec (JPEG, WebP, AVIF, ...) is unavailable or failed on an image."""


class SkippedInputsError(TaskcodecError):
    """A batch command finished, but skipped some inputs (each was reported with its reason)."""


class OverloadedError(TaskcodecError):
    """A server refused a request for load (its queue was full, or the request waited past its deadline).

    ``retry_after`` is how many seconds the client should wait before sending it again.
    """

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after
