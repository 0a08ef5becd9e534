"""The project's exception: a message a user can act on, shown as one line by the stages."""


class StagewiseError(Exception):
    """Bad input or state that the user can fix; the message says what and how."""


def first_line(error: BaseException) -> str:
    """Another tool's exception as one line of a message: its first line, or its type when it
    has no text."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
