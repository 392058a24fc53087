"""Config files: finding one by name, reading its YAML, and layering flags and ``--set`` on top.

``load_config`` is the one way in: a base (defaults or a checkpoint's recorded config), then the
file, then flags, then ``--set`` pairs, validated by :func:`mlp_cli.config.build_config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlp_cli.config import SECTIONS, Config, build_config, show_value, unknown_name, where_prefix
from mlp_cli.errors import ConfigError
from mlp_cli.words import did_you_mean

# The configs/ folder of the checkout this package runs from (the set-up installs it editable),
# so that ``--config cs229`` works from any directory, not only the repository's root.
CHECKOUT_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def config_names(subfolder: str = "") -> list[str]:
    """The names a config (or, with ``subfolder="sweeps"``, a sweep) may be given by: the .yaml
    files in ./configs and the checkout's configs/ (for the messages and shell completion)."""
    folders = [Path("configs") / subfolder, CHECKOUT_CONFIGS / subfolder]
    return sorted({p.stem for folder in folders if folder.is_dir() for p in folder.glob("*.yaml")})


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
    from mlp_cli.errors import ConfigError

    names = config_names()
    hint = did_you_mean(config, names)
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
            put_setting(merged, key, value, source="flag")
    set_keys = []
    for item in sets:
        key, text = split_set(item)
        put_setting(merged, key, parse_scalar(text, key), source="--set")
        set_keys.append(key)
    try:
        return build_config(merged, where=path)
    except ConfigError as err:
        flag_keys = [k for k in overrides or {} if k not in set_keys]
        raise ConfigError(naming_flags(str(err), flag_keys, where_prefix(path))) from None


def naming_flags(message: str, flag_keys: list[str], prefix: str = "") -> str:
    """``model.hidden = -5`` -> ``--hidden / model.hidden = -5`` for keys set by a flag: the
    message names what was typed as well as the key, and not the config file (``prefix``) that
    the flag overrode."""
    from mlp_cli.config import FLAG_KEYS

    flags = {key: flag for flag, key in FLAG_KEYS.items()}
    for key in flag_keys:
        if key in flags and f"{key} = " in message:
            message = message.replace(f"{key} = ", f"--{flags[key]} / {key} = ", 1)
            message = message[len(prefix):] if prefix and message.startswith(prefix) else message
    return message


MAX_CONFIG_BYTES = 64 << 10  # ours are under 2 KB


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Load a YAML mapping, turning every way it can fail into a one-line ConfigError."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config {path} is a directory; give a YAML file such as configs/default.yaml")
    text = _read_text(path)
    data = _load_yaml(text, f"config {path}")
    if data is None:
        raise ConfigError(f"config {path} is empty; start from configs/default.yaml")
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of sections, got {show_value(data)}")
    return data


def _read_text(path: Path) -> str:
    """The file's text: a regular file (a FIFO or device would never end) of bounded size, read
    by the one bounded reader of the files the tool reads back (``record_files``)."""
    from mlp_cli.record_files import read_record_text

    return read_record_text(path, MAX_CONFIG_BYTES, "config", error=ConfigError, too_large="a config is a few lines",
                            not_found=f"config file {path} not found (the shipped ones are in configs/)",
                            follow_links=True)  # a config the user names: a link there is theirs


def _load_yaml(text: str, what: str) -> Any:
    """YAML without aliases (an alias bomb expands 400 bytes into gigabytes) or dates (no
    setting is one, and an impossible date would be a ValueError); every error one line."""
    import yaml

    try:
        return yaml.load(text, Loader=_loader())  # noqa: S506  (a SafeLoader subclass)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or "invalid YAML"
        line = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        kind = "" if "not allowed" in problem else "YAML syntax error: "
        raise ConfigError(f"{what}{line}: {kind}{problem}") from None
    except RecursionError:  # PyYAML recurses once per level of nesting
        raise ConfigError(f"{what}: YAML nested too deeply to be a config") from None
    except (ValueError, TypeError, OverflowError) as err:  # a tag such as !!int x, !!float y
        reason = " ".join(str(err).split())[:80]
        raise ConfigError(f"{what}: a YAML value cannot be converted ({reason})") from None


_LOADER: Any = None


def _loader() -> Any:
    """SafeLoader less timestamps, refusing aliases and a key given twice (built once, on first use)."""
    global _LOADER
    if _LOADER is None:
        import yaml

        class Loader(yaml.SafeLoader):
            def compose_node(self, parent: Any, index: Any) -> Any:
                if self.check_event(yaml.AliasEvent):
                    mark = self.peek_event().start_mark
                    raise yaml.composer.ComposerError(
                        None, None, "aliases (*name) are not allowed in a config", mark
                    )
                return super().compose_node(parent, index)

            def construct_mapping(self, node: Any, deep: bool = False) -> Any:
                seen: set[Any] = set()  # PyYAML keeps the last of two equal keys: the first would do nothing
                for key_node, _ in node.value:
                    key = self.construct_object(key_node, deep=deep)
                    if isinstance(key, str | int | float | bool) and key in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"the key {str(key)[:40]!r} is given twice; keep one", key_node.start_mark)
                    seen.add(key if isinstance(key, str | int | float | bool) else id(key_node))
                return super().construct_mapping(node, deep)

        Loader.yaml_implicit_resolvers = {
            first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
            for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
        }
        _LOADER = Loader
    return _LOADER


def parse_scalar(text: str, key: str = "value") -> Any:
    """Parse a ``--set`` value the way YAML would (``0.1`` -> float, ``true`` -> bool, ...);
    text YAML cannot read stays text; a value YAML cannot convert is a ConfigError."""
    if not text:
        return ""
    try:
        return _load_yaml(text, f"--set {key}")
    except ConfigError as err:
        if "YAML syntax error" in str(err):
            return text
        raise


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


def split_set(item: str, expects: str = "section.key=value") -> tuple[str, str]:
    """``--set section.key=value`` -> (key, value text), both stripped; the text is the value's
    to parse (:func:`parse_scalar`; a sweep's ``a,b,c`` are a grid axis)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects {expects}, got {item!r}")
    return key.strip(), text.strip()


def put_setting(sections: dict[str, dict[str, Any]], dotted: str, value: Any, source: str = "") -> None:
    """Set ``section.key`` to ``value`` in a mapping of sections. The section must be one of the
    config's (an unknown one is refused here); build_config judges the key and the value.
    ``source`` (``flag``, ``--set``) names in the error where a malformed key came from."""
    section, sep, key = dotted.partition(".")
    if not sep or not key or "." in key:
        named = f"{source} key {dotted!r}" if source else repr(dotted)
        raise ConfigError(f"{named} must look like section.key (e.g. model.hidden)")
    if section not in SECTIONS:
        raise ConfigError(unknown_name("section", section, list(SECTIONS), where=None))
    sections.setdefault(section, {})[key] = value
