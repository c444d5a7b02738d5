"""One error tree for farm. Every FarmError carries a one-line message meant for the user and knows
whether retrying the same work elsewhere could help; all of them survive pickling across Ray."""

from __future__ import annotations


class FarmError(Exception):
    """Base of every error farm raises on purpose. The message is one line a user can act on."""

    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self):  # keep the subclass and message intact across Ray's pickling
        return (type(self), (self.message,))

    def __str__(self) -> str:
        return self.message


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (libraries' messages run to tracebacks), or its
    type's name when it has none: what a one-line error quotes of a cause."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class UsageError(FarmError):
    """An option or combination of options that can never work."""


class InputError(FarmError):
    """The input file is missing, unreadable, or not a video farm can process."""


class ProbeError(InputError):
    """The container or its video stream could not be read or indexed."""


class OutputError(FarmError):
    """The output location is unusable, or a source stream cannot be stored in the chosen container."""


class WeightsError(FarmError):
    """Model weights are missing, corrupt, or of an architecture that does not fit the request."""


class UnknownModel(WeightsError):
    """A model name that is not in the registry."""


class MissingWeights(WeightsError):
    """A weights file is not where it must be."""


class DecodeError(FarmError):
    """A frame of a shard could not be decoded, or decoding did not give the indexed frames."""

    retryable = True


class EnhanceError(FarmError):
    """The model failed on a frame for a reason other than running out of memory."""

    retryable = True


class BadOutput(EnhanceError):
    """The job's first output frame is uniform, black or NaN where its source is not (broken
    weights, device or decode): not retried, so the job stops at its first shard."""

    retryable = False


class OutOfDeviceMemory(EnhanceError):
    """The device ran out of memory even with the smallest tile size."""


class EncodeError(FarmError):
    """A shard's segment could not be encoded."""

    retryable = True


class ShardGivenBack(FarmError):
    """Not a failure: the worker was told to leave (its node is drained or preempted: SIGTERM, or
    its drain() was called), committed the parts it finished and gave its shard back. The ledger
    queues the shard again with no attempt counted; ``frames_kept``: source frames committed in
    parts, which the next worker reuses."""

    retryable = True

    def __init__(self, message: str, frames_kept: int = 0) -> None:
        super().__init__(message)
        self.frames_kept = frames_kept

    def __reduce__(self):
        return (type(self), (self.message, self.frames_kept))


class StorageError(FarmError):
    """The job directory could not be read or written."""

    retryable = True


class ClusterError(FarmError):
    """The Ray cluster cannot be joined, or was lost while the job ran; the job can be resumed."""

    retryable = True


class MuxError(FarmError):
    """The final output could not be assembled or did not verify."""


class JobFailed(FarmError):
    """A shard exhausted its attempts, or the job was aborted; the message is the report."""


class JobCancelled(FarmError):
    """The job was cancelled by the user; what was done is kept."""
