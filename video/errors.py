"""The one error the video package raises for input it cannot use."""


class VideoError(ValueError):
    """A video that cannot be decoded, or boxes that cannot be read; the message says which and where."""
