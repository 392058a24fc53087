"""Config files: finding one by name, reading its YAML, and layering flags and ``--set`` on top.

``load_config`` is the one way in: a base (defaults or a checkpoint's recorded config), then the
file, then flags, then ``--set`` pairs, validated by :func:`mlp_cli.config.build_config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlp_cli.config import SECTIONS, Config, build_config, show_value, unknown_name, where_prefix
from mlp_cli.errors import ConfigError

# The configs/ folder of the checkout this package runs from (the set-up installs it editable),
# so that ``--config cs229`` works from any directory, not only the repository's root.
CHECKOUT_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def resolve_config_path(config: str | None) -> Path | None:
    """A path, or the name of a file in ./configs or the checkout's configs/ (``cs229`` ->
    configs/cs229.yaml). An unknown name is a ConfigError listing the names there are."""
    if config is None:
        return None
    path = Path(config)
    if path.exists() or path.suffix or len(path.parts) > 1:
        return path  # a path: load_config reports a missing or bad file
    folders = [Path("configs"), CHECKOUT_CONFIGS]
    for folder in folders:
        if (folder / f"{config}.yaml").is_file():
            return folder / f"{config}.yaml"
    import difflib

    from mlp_cli.errors import ConfigError

    names = sorted({p.stem for folder in folders if folder.is_dir() for p in folder.glob("*.yaml")})
    close = difflib.get_close_matches(config, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    known = f"; the configs there: {', '.join(names)}" if names else ""
    raise ConfigError(
        f"config {config!r} not found{hint}: no such file, and no {config}.yaml in ./configs "
        f"or {CHECKOUT_CONFIGS}{known}"
    )


def load_config(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    sets: list[str] | tuple[str, ...] = (),
    base: dict[str, Any] | None = None,
) -> Config:
    """Resolve a config: ``base`` (e.g. a checkpoint's config) or the defaults, then the YAML file
    at ``path``, then ``overrides`` ({"section.key": value}, from flags), then the
    ``--set section.key=value`` strings. Everything is validated; returns a frozen Config."""
    merged = _base_sections(base)
    raw = read_yaml(path) if path is not None else {}
    for section, values in raw.items():
        if section not in SECTIONS:
            raise ConfigError(unknown_name("section", str(section), list(SECTIONS), where=path))
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ConfigError(
                f"{where_prefix(path)}section {section!r} must be a mapping of keys to values, "
                f"got {show_value(values)}"
            )
        merged.setdefault(section, {}).update(values)
    for key, value in (overrides or {}).items():
        if value is not None:
            _put(merged, key, value, source="flag")
    for item in sets:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        _put(merged, key.strip(), parse_scalar(text.strip()), source="--set")
    return build_config(merged, where=path)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Load a YAML mapping, turning every way it can fail into a one-line ConfigError."""
    import yaml

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config {path} is a directory; give a YAML file such as configs/default.yaml")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found (the shipped ones are in configs/)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config {path}: {err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or "invalid YAML"
        line = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"config {path}{line}: YAML syntax error: {problem}") from None
    except RecursionError:  # PyYAML recurses once per level of nesting
        raise ConfigError(f"config {path}: YAML nested too deeply to be a config") from None
    if data is None:
        raise ConfigError(f"config {path} is empty; start from configs/default.yaml")
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of sections, got {show_value(data)}")
    return data


def parse_scalar(text: str) -> Any:
    """Parse a ``--set`` value the way YAML would (``0.1`` -> float, ``true`` -> bool, ...)."""
    import yaml

    try:
        value = yaml.safe_load(text) if text else ""
    except (yaml.YAMLError, RecursionError):
        return text
    return value


def _base_sections(base: Any) -> dict[str, dict[str, Any]]:
    """A copy of ``base`` (e.g. a checkpoint's recorded config), checked to be sections of keys."""
    if base is None:
        return {}
    if not isinstance(base, dict):
        raise ConfigError(f"the recorded config must be a mapping of sections, got {show_value(base)}")
    merged = {}
    for section, values in base.items():
        if not isinstance(values, dict):
            raise ConfigError(
                f"section {section!r} of the recorded config must be a mapping of keys to values, "
                f"got {show_value(values)}"
            )
        merged[section] = dict(values)
    return merged


def _put(merged: dict[str, dict[str, Any]], dotted: str, value: Any, source: str) -> None:
    section, sep, key = dotted.partition(".")
    if not sep or not key or "." in key:
        raise ConfigError(f"{source} key {dotted!r} must look like section.key (e.g. model.hidden)")
    if section not in SECTIONS:
        raise ConfigError(unknown_name("section", section, list(SECTIONS), where=None))
    merged.setdefault(section, {})[key] = value
