"""Classes of named fields, as @dataclass makes them, for the modules that every start
of plugbox (and of plug) loads.

Importing dataclasses (which brings inspect and typing, and compiles code for each
class) costs each start about 5 ms; this costs nothing. A subclass names its fields
in FIELDS and their defaults in DEFAULTS; it gets __init__ (positional or by
name), ==, hash and repr over those fields, and vars() as a dataclass does.
Pure, no I/O.
"""


class Plain:
    FIELDS: tuple[str, ...] = ()
    # A field's default, when it has one; a type (dict, list, set) gives a fresh
    # empty one to each instance, as dataclasses' field(default_factory=...) does.
    DEFAULTS: dict = {}

    def __init__(self, *args, **kwargs):
        names = self.FIELDS
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes {len(names)} fields, not {len(args)}")
        values = dict(zip(names, args))
        for name, value in kwargs.items():
            if name not in names or name in values:
                raise TypeError(f"{type(self).__name__}: unexpected or repeated field {name!r}")
            values[name] = value
        for name in names:
            if name not in values:
                if name not in self.DEFAULTS:
                    raise TypeError(f"{type(self).__name__}: missing field {name!r}")
                default = self.DEFAULTS[name]
                values[name] = default() if isinstance(default, type) else default
            setattr(self, name, values[name])

    def _values(self) -> tuple:
        return tuple(getattr(self, name) for name in self.FIELDS)

    def __eq__(self, other) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._values()))

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.FIELDS)
        return f"{type(self).__name__}({shown})"
