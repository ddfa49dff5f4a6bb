"""What a run folder records of its plugins (plugins.json), and the trust policy for loading them again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cnnspec.errors import RunFolderError
from cnnspec.registry.trust import LOADED, Policy, file_hash, is_plugin_file
from cnnspec.train.rundir import RUN_PLUGINS_FILE


def run_record(refs: list[str]) -> list[dict[str, Any]]:
    """What a run folder records of its plugins: each reference, and a file's SHA-256."""
    out: list[dict[str, Any]] = []
    for ref in refs:
        if is_plugin_file(ref):
            out.append({"ref": ref, "sha256": LOADED.get(ref) or file_hash(ref)})
        else:
            out.append({"ref": ref})
    return out


def run_policy(run_dir: Path, listed: Any, trust: bool = False, cli: tuple[str, ...] | list[str] = ()) -> Policy:
    """The policy for loading a run folder's plugins: the list its spec names now must be the
    list the run was made with, and each file must still have the recorded SHA-256 (and be
    trusted, like any file a spec names). Raises RunFolderError when the record disagrees."""
    refs = [r for r in listed if isinstance(r, str)] if isinstance(listed, list) else []
    record = run_dir / RUN_PLUGINS_FILE
    policy = Policy(listed=trust, files=frozenset(str(Path(p).resolve()) for p in cli),
                    how=f"cnnspec trust {run_dir}")
    try:
        doc: Any = json.loads(record.read_text(encoding="utf-8"))
    except FileNotFoundError:
        doc = None
    except (OSError, ValueError) as e:
        raise RunFolderError(f"{record}: unreadable ({e}); refused") from None
    if doc is None:
        if refs:
            raise RunFolderError(f"{run_dir}: its spec lists plugins, but the run folder has no "
                                 f"{RUN_PLUGINS_FILE} recording them; refused")
        policy.pinned = {}
        return policy
    entries = doc.get("plugins") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not all(
            isinstance(e, dict) and isinstance(e.get("ref"), str) and isinstance(e.get("sha256", ""), str)
            for e in entries):
        raise RunFolderError(f"{record}: not a plugin record; refused")
    recorded = [e["ref"] for e in entries]
    if recorded != refs:
        raise RunFolderError(f"{run_dir}: the plugins its spec.yaml lists ({', '.join(refs) or 'none'}) are "
                             f"not the ones the run was made with ({', '.join(recorded) or 'none'}); refused")
    policy.pinned = {str(Path(e["ref"]).resolve()): e["sha256"] for e in entries if "sha256" in e}
    return policy
