"""Which plugin code may run: a store of trusted files (path -> SHA-256s), and loading them.

Installed cnnspec plugins (a distribution's ``cnnspec`` entry point, and modules inside one) are
trusted by being installed. Any other module name a spec lists is imported only when the user
trusted that name (``cnnspec trust``, recorded here as ``module:NAME``, or ``--trust`` for one
call; ``-p MODULE`` is the user's own choice); being importable is not trust, and a ``__main__``
module is never imported. A ``.py`` file named by a spec or a run folder runs only when the
user trusted exactly its bytes (``cnnspec trust``, recorded here; every version trusted stays
trusted), or for one call (``--trust``, or naming it with ``-p``). The bytes that are hashed are
the bytes that are executed.

Light on purpose: ``validate`` imports this, and must stay free of heavy modules.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from cnnspec.errors import PluginError
from cnnspec.util.files import NotRegularFile, read_regular

TRUST_FILE_ENV = "CNNSPEC_TRUST_FILE"  # where the store lives, if not the default
MAX_PLUGIN_BYTES = 5_000_000
MAX_STORE_BYTES = 10_000_000  # the trust store: tens of thousands of entries
LOADED: dict[str, str] = {}  # path -> SHA-256 of the bytes this process executed


def is_plugin_file(ref: str) -> bool:
    """A plugin reference names a file (``x.py``, ``dir/x``) rather than an importable module."""
    return ref.endswith(".py") or "/" in ref or os.sep in ref


MODULE_PREFIX = "module:"  # a trusted module name in the store: "module:NAME" -> MODULE_TRUST
MODULE_TRUST = "trusted by name"


def never_imported(name: str) -> str | None:
    """Why a module name is never imported as a plugin (a ``__main__`` runs a program), else None."""
    if "__main__" in name.split("."):
        return f"plugin module {name!r} is a program's __main__, never a plugin; nothing was imported"
    return None


class UntrustedPlugin(PluginError):
    """A plugin file that the user has not trusted (or that changed since); nothing was imported."""


def store_path() -> Path:
    """``$CNNSPEC_TRUST_FILE``, else ``$XDG_CONFIG_HOME/cnnspec/trusted.json`` (~/.config by default)."""
    explicit = os.environ.get(TRUST_FILE_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "cnnspec" / "trusted.json"


class TrustStoreError(PluginError):
    """The trust store exists but cannot be read or parsed; it is never rewritten then."""


def read_store() -> dict[str, list[str]]:
    """Trusted files: absolute path -> the SHA-256 hex of each trusted version; a missing store
    trusts nothing. A path's value in the file is one hash (the only form before several were
    kept, and still written when there is one) or a list of them.

    Read like a spec: a regular file only (a FIFO or /dev/zero is refused without blocking or
    reading), at most MAX_STORE_BYTES. A store that exists but cannot be read or parsed raises
    TrustStoreError naming the file (and the line), rather than silently trusting nothing and
    later being rewritten with only the new entries.
    """
    path = store_path()
    fix = "; fix or remove it (cnnspec trust does not rewrite a store it cannot read)"
    try:
        raw = read_regular(path, MAX_STORE_BYTES)
    except FileNotFoundError:
        return {}
    except NotRegularFile:
        raise TrustStoreError(f"the trust store {path} is not a regular file (a directory, device, pipe or "
                              f"socket){fix}") from None
    except OSError as e:
        raise TrustStoreError(f"the trust store {path} cannot be read ({e.strerror or e}){fix}") from None
    if len(raw) > MAX_STORE_BYTES:
        raise TrustStoreError(f"the trust store {path} is larger than {MAX_STORE_BYTES:,} bytes{fix}")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise TrustStoreError(f"{path}:{line}: the trust store is not UTF-8 text{fix}") from None
    except json.JSONDecodeError as e:
        raise TrustStoreError(f"{path}:{e.lineno}:{e.colno}: the trust store is not valid JSON "
                              f"({e.msg}){fix}") from None
    except (ValueError, RecursionError) as e:  # a number of 5,000 digits, nesting past the parser's depth
        why = "nested too deep" if isinstance(e, RecursionError) else str(e).split(":")[0]
        raise TrustStoreError(f"{path}:1: the trust store is not a JSON document cnnspec reads ({why}){fix}") from None
    files = doc.get("files", {}) if isinstance(doc, dict) else None
    if not isinstance(files, dict) or not all(
            isinstance(v, str) or (isinstance(v, list) and v and all(isinstance(h, str) for h in v))
            for v in files.values()):
        raise TrustStoreError(f"{path}:1: not a cnnspec trust store (expected {{\"version\": 1, \"files\": "
                              f"{{PATH: SHA256 or [SHA256, ...], ...}}}}){fix}")
    return {str(k): [v] if isinstance(v, str) else list(v) for k, v in files.items()}


def _stored(hashes: list[str]) -> str | list[str]:
    """How a path's hashes are written: one as a plain string (what older cnnspec reads), else a list."""
    return hashes[0] if len(hashes) == 1 else hashes


def add_to_store(entries: Mapping[str, str]) -> Path:
    """Record files as trusted (path -> SHA-256), beside the versions already trusted. Returns the
    store's path.

    The store is read first (TrustStoreError if it cannot be: nothing is written then), and
    written atomically: a temporary file beside the real file, renamed over it. A symlinked store
    is written through to its target (the link stays), keeping the target's permissions.
    """
    path = store_path()
    files = read_store()
    for key, digest in entries.items():
        known = files.setdefault(key, [])
        if digest not in known:
            known.append(digest)
    target = Path(os.path.realpath(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"version": 1, "files": {k: _stored(v) for k, v in sorted(files.items())}}, indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
        except FileNotFoundError:
            pass  # a new store: private (mkstemp's 0600)
        os.replace(tmp, target)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def read_plugin_file(path: Path, ref: str = "") -> bytes:
    """The bytes of a plugin file: a regular ``.py`` file of sane size, else PluginError."""

    ref = ref or str(path)
    if path.suffix != ".py":
        raise PluginError(f"plugin file {ref!r} is not a .py file (looked at {path})")
    try:
        data = read_regular(path, MAX_PLUGIN_BYTES)
    except FileNotFoundError:
        raise PluginError(f"plugin file {ref!r} not found (looked at {path})") from None
    except NotRegularFile:
        raise PluginError(f"plugin file {ref!r} is not a regular file (looked at {path})") from None
    except OSError as e:
        raise PluginError(f"plugin file {ref!r} cannot be read ({e.strerror or e}; looked at {path})") from None
    if len(data) > MAX_PLUGIN_BYTES:
        raise PluginError(f"plugin file {ref!r} is larger than {MAX_PLUGIN_BYTES} bytes")
    return data


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_hash(path: str | Path) -> str:
    """SHA-256 of a plugin file (PluginError when it is not a readable .py file)."""
    return sha256(read_plugin_file(Path(path)))


@dataclass
class Policy:
    """What this call trusts beyond the store.

    ``listed``: every file the spec names (``--trust``). ``files``: these exact paths (``-p``).
    ``pinned``: a run folder's record (path -> SHA-256); a file must still have that hash, unless
    the user accepts the changed file (``--trust``, or naming it with ``-p``).
    ``how``: the command that would trust the spec, for the message.
    """

    listed: bool = False
    files: frozenset[str] = frozenset()
    pinned: Mapping[str, str] | None = None
    how: str = ""
    store: dict[str, list[str]] | None = field(default=None, repr=False)

    def check_module(self, name: str) -> None:
        """A module a spec names (not a file, not an installed cnnspec plugin) is imported only when
        the user trusted its name (``cnnspec trust``, or --trust for this call): merely checking a
        spec someone else wrote must not run their choice of installed code."""
        if self.listed:
            return
        if self.store is None:
            self.store = read_store()
        if MODULE_TRUST in self.store.get(MODULE_PREFIX + name, []):
            return
        how = self.how or "cnnspec trust SPEC"
        raise UntrustedPlugin(
            f"plugin module {name!r} is not an installed cnnspec plugin (no 'cnnspec' entry point) and is "
            f"not trusted; nothing was imported. If you meant it, trust it with `{how}`, or pass --trust "
            "for this call")

    def check(self, path: Path, digest: str, ref: str) -> None:
        key = str(path)
        accepted = self.listed or key in self.files  # the user said so for this call
        if self.pinned is not None and self.pinned.get(key) != digest and not accepted:
            was = self.pinned.get(key)
            raise UntrustedPlugin(
                f"plugin file {ref!r} changed since the run was made (sha256 {digest[:12]}, the run "
                f"recorded {(was or 'nothing')[:12]}); nothing was imported. If the changed file is "
                "what you mean to run, pass --trust")
        if accepted:
            return
        if self.store is None:
            self.store = read_store()
        known = self.store.get(key, [])
        if digest in known:
            return
        what = "changed since it was trusted" if known else "is not trusted"
        how = self.how or "cnnspec trust SPEC"
        raise UntrustedPlugin(
            f"plugin file {ref!r} {what} (sha256 {digest[:12]}); nothing was imported. "
            f"Read it, then trust it with `{how}`, or pass --trust for this call")


def load_plugin_file(ref: str, path: Path, policy: Policy | None) -> ModuleType:
    """Import a plugin file if ``policy`` trusts its bytes (None: trusted, e.g. named with -p)."""
    data = read_plugin_file(path, ref)
    digest = sha256(data)
    if policy is not None:
        policy.check(path, digest, ref)
    name = f"cnnspec_local_{path.stem}_{digest[:16]}"
    LOADED[str(path)] = digest
    if name in sys.modules:
        return sys.modules[name]
    module = ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    try:
        code = compile(data, str(path), "exec")
        exec(code, module.__dict__)
    except (Exception, SystemExit) as e:
        del sys.modules[name]
        if isinstance(e, SystemExit):
            raise PluginError(f"plugin {ref!r} tried to end the process while importing "
                              f"(SystemExit({e.code!r})); refused") from None
        raise PluginError(f"plugin {ref!r} failed to import: {type(e).__name__}: {e}") from e
    return module


@contextmanager
def without_current_folder() -> Iterator[None]:
    """Import module names from the installed environment only, never from the current folder
    (``python -m`` puts it first on sys.path, where a spec's repository could shadow a name)."""
    here = {"", ".", os.getcwd()}
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if p not in here]
    try:
        yield
    finally:
        sys.path[:] = saved
