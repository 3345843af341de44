"""One settings mechanism for every command: a dataclass whose fields are the settings.

From the fields come the command-line flags and their help (``add_arguments``), the keys a
YAML file may hold, and the type checks (from the type hints).  ``Settings.resolve`` is the one
place where settings meet: the defaults, then a recipe's values beneath the user's, then the
``--config`` YAML file, then flags or keyword arguments — each layer checked on its own, so a
bad value in the file is an error even where a flag overrides it.  Validation across fields
lives in each class's ``check`` (cooperative: call ``super().check()``) and runs in
``__post_init__``, however the settings are made.

    @dataclass
    class MySettings(Settings):
        epochs: int = option(8, "how many passes over the data")

        def check(self):
            super().check()
            require(self.epochs >= 1, "epochs", f"must be at least 1, got {self.epochs}")
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from collections.abc import Callable
from pathlib import Path

import yaml

from ..base.errors import UserError, setting

TRUE, FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def option(default, help: str, *, choices: tuple | None = None, positional: bool = False, metavar: str | None = None,
           required_flag: bool = False):
    """A settings field: its default, its help text (tuning advice welcome), and optionally
    the values it may take, whether it is a positional argument on the command line, and
    whether the command line requires it (a file the command writes, say) where Python does not."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "positional": positional,
                                                        "metavar": metavar, "required_flag": required_flag})


def require(ok: bool, name: str, problem: str) -> None:
    """Raise a one-line ``UserError`` naming setting ``name`` (flag or parameter) unless ``ok``."""
    if not ok:
        raise UserError(f"{setting(name)} {problem}")


class Settings:
    """Base of every command's settings dataclass: type checks and ``check()`` on creation."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            object.__setattr__(self, field.name, checked(field, getattr(self, field.name), hints[field.name]))
        self.check()

    def check(self) -> None:
        """Validation across fields; subclasses raise with ``require`` after ``super().check()``."""

    @classmethod
    def names(cls) -> set[str]:
        return {field.name for field in dataclasses.fields(cls)}

    @classmethod
    def resolve(cls, config_file: str | Path | None = None, given: dict | None = None,
                beneath: Callable[[dict], dict] | None = None) -> tuple["Settings", set[str]]:
        """The settings, by precedence: the defaults, then ``beneath(user's values)`` (e.g. the named
        recipe the user chose), then the YAML file, then ``given`` (flags or keyword arguments; None
        means "not given").  Returns them and the names the user set (in the file or given)."""
        given = {name: value for name, value in (given or {}).items() if value is not None}
        from_file = load_yaml(config_file) if config_file is not None else {}
        cls._check_layer(from_file, f"in {config_file}")
        cls._check_layer(given, "")
        user = {**from_file, **given}
        under = beneath(user) if beneath else {}
        cls._check_layer(under, "in the recipe")
        return cls(**{**under, **user}), set(user)

    @classmethod
    def create(cls, config_file: str | Path | None = None, **given):
        """``resolve``'s settings alone: defaults < YAML file < ``given``."""
        return cls.resolve(config_file, given)[0]

    @classmethod
    def _check_layer(cls, values: dict, where: str) -> None:
        """Every name known and every value of its field's type and choices, for one layer."""
        fields, hints = {f.name: f for f in dataclasses.fields(cls)}, typing.get_type_hints(cls)
        for name, value in values.items():
            if name not in fields:
                raise UserError(f"unknown setting '{name}'{' ' + where if where else ''}; see --help for the list")
            checked(fields[name], value, hints[name], f"{name} {where}" if where else None)

    def to_dict(self) -> dict:
        return {name: list(value) if isinstance(value, tuple) else value
                for name, value in dataclasses.asdict(self).items()}

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def _is_optional(annotation) -> tuple[bool, object]:
    """(whether None is allowed, the annotation without None)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return len(members) < len(typing.get_args(annotation)), members[0] if len(members) == 1 else annotation
    return False, annotation


def checked(field: dataclasses.Field, value, annotation, label: str | None = None):
    """``value`` coerced to the field's type (``coerce``) and within its choices."""
    value = coerce(field.name, value, annotation, label)
    choices = field.metadata.get("choices")
    if choices and value is not None:
        for item in value if isinstance(value, tuple) else (value,):
            if item not in choices:
                raise UserError(f"{label or setting(field.name)} must be one of {', '.join(map(str, choices))}, "
                                f"got {item!r}")
    return value


def coerce(name: str, value, annotation, label: str | None = None):
    """``value`` (from a flag, YAML or Python) as the field's annotated type, or a one-line error
    naming the setting as ``label`` (default: the flag or parameter)."""
    label = label or setting(name)
    optional, kind = _is_optional(annotation)
    if value is None:
        if not optional:
            raise UserError(f"{label} cannot be empty")
        return None
    if typing.get_origin(kind) is tuple:  # "0.5,0.5", ["0.5", "0.5"] (flags), [0.5, 0.5] (YAML, Python)
        item_kind = typing.get_args(kind)[0]
        values = value if isinstance(value, (list, tuple)) else [value]
        splits = item_kind in (int, float)  # numbers may come comma-separated; names and paths never split
        items = [item for v in values for item in (v.replace(",", " ").split() if splits and isinstance(v, str) else [v])]
        try:
            return tuple(coerce(name, item, item_kind, label) for item in items)
        except UserError:
            raise UserError(f"{label} expects {_type_name(annotation)}, got {value!r}") from None
    try:
        if kind is bool:
            if isinstance(value, str) and value.lower() in TRUE + FALSE:
                return value.lower() in TRUE
            if isinstance(value, bool) or value in (0, 1):
                return bool(value)
            raise ValueError
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind is str:
            if isinstance(value, (dict, list, tuple)):
                raise ValueError
            return str(value)
    except (TypeError, ValueError, OverflowError):
        pass
    else:
        return value  # another annotated type: taken as given (e.g. data that is not a path)
    raise UserError(f"{label} expects {_type_name(annotation)}, got {value!r}")


def _type_name(annotation) -> str:
    optional, kind = _is_optional(annotation)
    if typing.get_origin(kind) is tuple:
        text = f"a list of {typing.get_args(kind)[0].__name__}"
    else:
        text = getattr(kind, "__name__", str(kind))
    return f"{text} or nothing" if optional else text


def is_finite(value: float | None) -> bool:
    return value is None or math.isfinite(value)


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} not found")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise UserError(f"config file {path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise UserError(f"config file {path} must be a mapping of setting: value")
    return values


def add_arguments(parser: argparse.ArgumentParser, cls: type, exclude: set[str] = frozenset()) -> None:
    """One flag (or positional argument) per field of ``cls``, help and default from the field.
    Flags that are not given stay out of the parsed namespace: what remains is what the user set."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in exclude:
            continue
        meta, kind = field.metadata, _is_optional(hints[field.name])[1]
        default = field.default
        shown = ", ".join(map(str, default)) if isinstance(default, tuple) else default
        help_text = meta["help"] + ("" if default is None else f" [default: {shown}]")
        help_text = help_text.replace("%", "%%")  # argparse formats help with %
        many = typing.get_origin(kind) is tuple
        if meta.get("positional"):
            parser.add_argument(field.name, nargs="+" if many else None, help=help_text,
                                metavar=meta.get("metavar") or field.name.upper())
            continue
        flag = "--" + field.name.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(flag, default=argparse.SUPPRESS, nargs="+" if many else None, help=help_text,
                                action="extend" if many else "store", metavar=meta.get("metavar") or field.name.upper(),
                                required=meta.get("required_flag", False))
