"""The one exception tree of MLGuard.

    MLGuardError                 anything MLGuard raises on purpose
    ├── UsageError               bad flags or values the user gave (exit code 2)
    ├── InputError               an input cannot be read or is not a log we know (exit code 2)
    │   └── StrictParseError     --strict and a line did not parse (exit code 2)
    ├── ModelError               a model file is unreadable, unsafe or from an incompatible version
    └── EnforcerError            an enforcer could not reach or update its target (its decisions are kept)

Only `mlguard.cli` turns these into exit codes; everything else raises them. Messages are one
sentence that names the bad value and, where there is one, the fix.
"""


class MLGuardError(Exception):
    """Base of every error MLGuard raises on purpose."""


class UsageError(MLGuardError):
    """The user asked for something that cannot be done as asked."""


class InputError(MLGuardError):
    """An input path, stream or its content cannot be read."""


class StrictParseError(InputError):
    """A line did not parse and --strict was given."""


class ModelError(MLGuardError):
    """A model file cannot be used."""


class EnforcerError(MLGuardError):
    """An enforcer could not reach or update its target; its decisions are kept for the next try."""
