"""``cnnspec trust``: record the SHA-256 of the plugin files that specs and run folders name."""

from __future__ import annotations

from pathlib import Path

from cnnspec.errors import CnnspecError
from cnnspec.registry.trust import (
    MODULE_PREFIX,
    MODULE_TRUST,
    add_to_store,
    is_plugin_file,
    never_imported,
    read_plugin_file,
    sha256,
    store_path,
)
from cnnspec.spec.yamlpos import load_file


def trust_targets(targets: list[str]) -> list[str]:
    """``cnnspec trust``: record the SHA-256 of every plugin file the targets name.

    A target is a spec file, a run folder (its spec.yaml) or a ``.py`` file. Nothing is
    imported. Returns one line per file, for the user to read."""
    found: dict[str, str] = {}
    lines: list[str] = []
    for target in targets:
        path = Path(target)
        if path.suffix == ".py":
            files = [path.resolve()]
        else:
            spec = path / "spec.yaml" if path.is_dir() else path
            data = load_file(str(spec)).data
            listed = data.get("plugins") if isinstance(data, dict) else None
            refs = [r for r in listed if isinstance(r, str)] if isinstance(listed, list) else []
            files = [(spec.parent / r).resolve() for r in refs if is_plugin_file(r)]
            for name in (r for r in refs if not is_plugin_file(r) and not never_imported(r)):
                found[MODULE_PREFIX + name] = MODULE_TRUST
                lines.append(f"trusted the module {name} by name (what is installed under that name will run)")
            if not files and not any(not is_plugin_file(r) for r in refs):
                lines.append(f"{target}: names no plugins; nothing to trust")
        for f in files:
            digest = sha256(read_plugin_file(f))
            found[str(f)] = digest
            lines.append(f"trusted {f} (sha256 {digest})")
    if found:
        try:
            store = add_to_store(found)
        except OSError as e:
            raise CnnspecError(f"cannot write the trust store {store_path()}: {e.strerror or e}") from None
        lines.append(f"recorded in {store}; a file that changes is untrusted again")
    return lines
