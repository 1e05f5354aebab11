"""The one exception type the codec raises for bad input."""


class AnrError(ValueError):
    """A file, image, model or argument the codec cannot accept; the message says why."""
