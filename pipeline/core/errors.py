"""The project's exception: a message a user can act on, shown as one line by the stages."""


class StagewiseError(Exception):
    """Bad input or state that the user can fix; the message says what and how."""
