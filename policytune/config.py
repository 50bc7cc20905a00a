"""One dataclass per stage: defaults < JSON config file < environment < command-line flags.

Every stage builds its config with `parse(StageConfig)`, prints it (secrets masked) and saves it
beside its outputs with `save(cfg, path)`. Unknown keys in a config file are an error: a silently
ignored typo is a classic source of wrong runs.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, TypeVar

ENV_PREFIX = "POLICYTUNE_"
SECRET_WORDS = ("key", "token", "secret", "password")


class UserError(Exception):
    """A problem with the user's input or setup: reported as one line, exit code 2."""


@dataclass
class Base:
    """Flags shared by every stage."""

    data_dir: str = field(default="data", metadata={"help": "where the stages read and write their JSON files"})
    checkpoint_dir: str = field(default="checkpoints", metadata={"help": "where the adapter and training state live"})
    config: str = field(default="", metadata={"help": "optional JSON file with values for any of these flags"})

    def data_path(self, name: str) -> Path:
        """A file under --data-dir (absolute names pass through)."""
        return Path(self.data_dir) / name

    def checkpoint_path(self, name: str) -> Path:
        return Path(self.checkpoint_dir) / name


T = TypeVar("T", bound=Base)


def _field_type(cls: type, f: dataclasses.Field) -> Any:
    hints = typing.get_type_hints(cls)
    return hints[f.name]


def _convert(value: Any, typ: Any, name: str) -> Any:
    """Turn a string (from env or CLI) or JSON value into the field's type."""
    origin = typing.get_origin(typ)
    if origin is typing.Union or str(origin) == "types.UnionType":
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None or value == "":
            return None
        return _convert(value, args[0], name)
    if origin is list:
        (item,) = typing.get_args(typ) or (str,)
        values = [value] if isinstance(value, str) else value
        # "a.pdf,b.pdf" is two values; "Leave, 2026.pdf" is one when that file exists
        pieces = [piece for v in values
                  for piece in ([v] if not isinstance(v, str) or os.path.exists(v) else v.split(","))]
        return [_convert(v.strip() if isinstance(v, str) and not os.path.exists(v) else v, item, name)
                for v in pieces if not isinstance(v, str) or v.strip()]
    if typ is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise UserError(f"{name}: expected true/false, got {value!r}")
    try:
        return typ(value)
    except (TypeError, ValueError):
        raise UserError(f"{name}: expected {getattr(typ, '__name__', typ)}, got {value!r}") from None


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


class _Parser(argparse.ArgumentParser):
    """argparse whose errors (an unknown flag, a missing value, a bad choice) are a UserError: one line and
    exit code 2 like any other bad input, instead of the usage block before the message."""

    def error(self, message: str) -> typing.NoReturn:
        raise UserError(f"{message} (--help lists the flags)")


def parse(cls: type[T], argv: list[str] | None = None, description: str | None = None) -> T:
    """Build a stage config from defaults, --config FILE, POLICYTUNE_* env vars and flags."""
    parser = _Parser(
        description=description or (sys.modules[cls.__module__].__doc__ or "").strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fields = [f for f in dataclasses.fields(cls) if f.init]
    for f in fields:
        typ = _field_type(cls, f)
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
        # argparse %-formats help strings: a literal "95%" would crash --help.
        help_text = f"{f.metadata.get('help', '')} (default: {default!r}; env {env_name(f.name)})".replace("%", "%%")
        if typ is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif typing.get_origin(typ) is list:
            # `--pdf a.pdf b.pdf` (a shell glob), repeated (`--pdf a.pdf --pdf b.pdf`) and comma-separated all work.
            # Choices are checked per item after splitting (argparse would see "a,b" as one value).
            choices = f.metadata.get("choices")
            parser.add_argument(flag, dest=f.name, action="extend", nargs="+", default=None,
                                help=help_text + (f"; each one of {list(choices)}" if choices else ""))
        else:
            parser.add_argument(flag, dest=f.name, default=None, help=help_text, choices=f.metadata.get("choices"))
    args = parser.parse_args(argv)

    values: dict[str, Any] = {}
    config_file = getattr(args, "config", None) or os.environ.get(env_name("config"), "")
    if config_file:
        values.update(_read_config_file(cls, config_file, from_env=not getattr(args, "config", None)))
    for f in fields:
        if env_name(f.name) in os.environ:
            values[f.name] = os.environ[env_name(f.name)]
    for f in fields:
        given = getattr(args, f.name)
        if given is not None:
            values[f.name] = given
    converted = {name: _convert(v, _field_type(cls, next(f for f in fields if f.name == name)), "--" + name.replace("_", "-"))
                 for name, v in values.items()}
    try:
        for f in fields:
            choices = f.metadata.get("choices")
            if not choices or f.name not in converted:
                continue
            value = converted[f.name]
            # A list field's choices apply to each item (comma-separated values skip argparse's check).
            for item in value if isinstance(value, list) else [value]:
                if item not in choices:
                    raise UserError(f"--{f.name.replace('_', '-')}: {item!r} is not one of {list(choices)}")
        return cls(**converted)
    except (TypeError, ValueError) as exc:
        raise UserError(str(exc)) from None


def _read_config_file(cls: type, path: str, from_env: bool = False) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config file must hold a JSON object")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        # POLICYTUNE_CONFIG reaches every stage, pipeline.py included: a file for one stage goes with its flag
        hint = (f" (read through {env_name('config')}, which every stage and pipeline.py read: give one stage's "
                "settings as its --config FILE, or --<stage>.config FILE to pipeline.py)") if from_env else ""
        raise UserError(f"{path}: unknown config keys {unknown} for {cls.__name__}{hint}")
    return data


def is_secret(name: str) -> bool:
    # Whole name parts only: `api_key` is secret, `max_tokens` is not.
    return any(part in SECRET_WORDS for part in name.lower().split("_"))


_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


def redact_url(text: str) -> str:
    """Text with the user:password part of any URL in it masked ("http://***@proxy:8000/v1"), for messages,
    printed commands and saved configs."""
    return _URL_CREDENTIALS.sub("***@", text)


def as_dict(cfg: Base, mask_secrets: bool = True) -> dict[str, Any]:
    """The config as plain JSON data, with secret-looking fields and the credentials inside URLs masked."""
    out = dataclasses.asdict(cfg)
    if mask_secrets:
        for name, value in out.items():
            if is_secret(name) and value:
                out[name] = "***"
            elif isinstance(value, str):
                out[name] = redact_url(value)
            elif isinstance(value, list):
                out[name] = [redact_url(v) if isinstance(v, str) else v for v in value]
    return out


def show(cfg: Base) -> None:
    """Print the resolved configuration so every run log says how it was made."""
    print(f"[{type(cfg).__name__}]", flush=True)
    for name, value in as_dict(cfg).items():
        print(f"  {name} = {value!r}", flush=True)


def save(cfg: Base, path: str | os.PathLike) -> None:
    """Save the (masked) config as JSON beside the stage's outputs."""
    from policytune import io

    io.write_json_atomic(path, as_dict(cfg))


def run(main: Callable[[T], Any], cls: type[T], argv: list[str] | None = None) -> None:
    """Entry point for a stage script: parse, run, and turn failures into one line + exit code."""
    try:
        cfg = parse(cls, argv)
        clear_stale_temporaries(cfg)
        main(cfg)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("interrupted: partial work is kept and a rerun resumes it", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    except OSError as exc:
        # A full disk, a read-only folder, a file where a folder belongs: the machine's state, said in one line (the
        # atomic writes leave the earlier file in place).
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or first_line(exc)}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def clear_stale_temporaries(cfg: Base) -> None:
    """Remove what killed runs left half-written in the stage's folders (`.instructionquality.json.h7e8tyl1.tmp1234`,
    as large as the file was), before the stage writes there; the files of a run still going are kept."""
    from policytune import io

    for folder in dict.fromkeys([cfg.data_dir, cfg.checkpoint_dir, getattr(cfg, "reports_dir", "")]):
        if folder:
            io.clear_stale_temporaries(folder)


def first_line(exc: object, limit: int = 200) -> str:
    """An error's first line for a one-line message (its type's name where it has no text)."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__


def load_script(path: Path) -> ModuleType:
    """A stage script (train.py, pipeline.py, ...) imported once by its path, for its config class: `import train`
    would find whichever `train` comes first on sys.path (bench/train.py beside bench/quality.py)."""
    name = f"stage_{path.stem}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up here
        spec.loader.exec_module(module)
    return sys.modules[name]
