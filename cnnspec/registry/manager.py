"""get_plugin_manager(): default plugins and entry points registered the same way, and the registry."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import sys
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from cnnspec.errors import OutOfMemory, PluginError, did_you_mean, out_of_memory, without_cpp_stack
from cnnspec.registry import hookspecs
from cnnspec.registry.hookspecs import Register, hookimpl
from cnnspec.registry.types import DuplicateName, Kind, Lazy, Registry

if TYPE_CHECKING:  # pragma: no cover
    from cnnspec.registry.trust import Policy

ENTRY_POINT_GROUP = "cnnspec"
# Set to 1 to ignore installed third-party plugins (reproducible runs, tests).
NO_ENTRYPOINTS_ENV = "CNNSPEC_NO_ENTRYPOINTS"

# The built-in plugins and the names each registers. Each is registered as a LazyPlugin: its
# module is imported only when a spec names one of its types (a test checks these lists against
# what the modules register), so `validate` imports what the spec uses and nothing more.
DEFAULT_PLUGINS: dict[str, dict[Kind, tuple[str, ...]]] = {
    "cnnspec.plugins.layers": {"layer": (
        "conv2d", "maxpool2d", "avgpool2d", "adaptiveavgpool2d", "adaptivemaxpool2d", "batchnorm1d",
        "batchnorm2d", "dropout", "dropout2d", "flatten", "linear", "identity")},
    "cnnspec.plugins.activations": {"layer": (
        "relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "mish", "sigmoid", "tanh",
        "hardtanh", "hardsigmoid", "hardswish", "softplus", "softmax", "log_softmax", "prelu")},
    "cnnspec.plugins.composites": {"layer": ("sequence", "repeat", "residual", "parallel")},
    "cnnspec.plugins.zoo_layers": {"layer": (
        "gate", "split", "channel_shuffle", "layernorm2d", "channel_linear", "layer_scale", "stochastic_depth")},
    "cnnspec.plugins.optimizers": {"optimizer": ("sgd", "adam", "adamw", "rmsprop", "adagrad")},
    "cnnspec.plugins.schedulers": {"scheduler": ("step", "multistep", "exponential", "cosine", "onecycle")},
    "cnnspec.plugins.losses": {"loss": ("cross_entropy", "nll_loss")},
    "cnnspec.plugins.mnist": {"dataset": ("mnist", "fashion_mnist")},
    "cnnspec.plugins.cifar": {"dataset": ("cifar10",)},
    "cnnspec.plugins.image_folder": {"dataset": ("image_folder",)},
    "cnnspec.plugins.datasets": {"dataset": ("digits", "synthetic")},
    "cnnspec.plugins.augment": {"augmentation": (
        "random_crop", "random_resized_crop", "horizontal_flip", "random_affine", "random_erasing", "mixup",
        "cutmix")},
    "cnnspec.plugins.callbacks": {"scheduler": ("reduce_on_plateau",), "callback": ("early_stopping", "unfreeze")},
}


class LazyPlugin:
    """A plugin known by the names it registers; ``module``, which defines them, is imported
    (by the registry) when one of them is first used. It implements every register_* hook
    (attached below, one per entry of ``hookspecs.REGISTER_HOOKS``)."""

    def __init__(self, module: str, names: dict[Kind, tuple[str, ...]]) -> None:
        self.module = module
        self.names = names

    def _give(self, kind: Kind, register: Register) -> None:
        for name in self.names.get(kind, ()):
            register(Lazy(name, self.module))


def _lazy_hook(kind: Kind) -> Any:
    def hook(self: LazyPlugin, register: Register) -> None:
        self._give(kind, register)

    return hookimpl(hook)


for _hook, _kind in hookspecs.REGISTER_HOOKS.items():
    setattr(LazyPlugin, _hook, _lazy_hook(_kind))


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, plus where each plugin came from (for ``cnnspec plugins``)."""

    def __init__(self) -> None:
        super().__init__("cnnspec")
        self.sources: dict[str, str] = {}


def get_plugin_manager(
    *, entrypoints: bool | None = None, extra: Iterable[Any] = ()
) -> PluginManager:
    """A fresh plugin manager with the default plugins, entry points (unless disabled) and ``extra``."""
    pm = PluginManager()
    pm.add_hookspecs(hookspecs)
    for name, names in DEFAULT_PLUGINS.items():
        pm.register(LazyPlugin(name, names), name=name)
        pm.sources[name] = "built-in"
    if entrypoints is None:
        entrypoints = os.environ.get(NO_ENTRYPOINTS_ENV, "") in ("", "0")
    try:
        if entrypoints:
            _load_entrypoints(pm)
        for plugin in extra:
            if pm.is_registered(plugin):  # named twice (spec and -p), or also an entry point
                continue
            file = getattr(plugin, "__file__", None)
            local = getattr(plugin, "__name__", "").startswith("cnnspec_local_")
            registered = pm.register(plugin, name=file if local else None)  # name local files by path
            if registered is not None:
                pm.sources[registered] = file or "registered in code"
        pm.check_pending()  # a hookimpl whose name matches no hook is a typo
    except pluggy.PluginValidationError as e:
        who = pm.get_name(e.plugin) or getattr(e.plugin, "__name__", type(e.plugin).__name__)
        hooks = [h for h in vars(hookspecs) if h.startswith(("register_", "before_", "after_"))]
        typo = re.search(r"unknown hook '(\w+)'", str(e))
        hint = did_you_mean(typo.group(1), hooks) if typo else ""
        raise PluginError(f"plugin '{who}' is invalid: {e}{hint}") from None
    return pm


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cnnspec" / "entry-points.json"


def installed_entrypoints() -> list[tuple[str, str, str]]:
    """(name, "module:attr", "distribution version") of every installed ``cnnspec`` entry point.

    Reading every installed distribution's metadata costs tens of milliseconds, a tenth of
    `validate`'s budget, so the answer is cached, keyed on the metadata folders on sys.path and
    their modification times: installing, upgrading or removing a package changes the key.
    """
    parts = []
    for folder in sys.path:
        try:
            with os.scandir(folder or ".") as it:
                parts += [f"{e.path}:{e.stat().st_mtime_ns}" for e in it
                          if e.name.endswith((".dist-info", ".egg-info"))]
        except OSError:
            continue
    key = "\n".join(parts)  # compared whole: hashlib alone would cost a few milliseconds to import
    cache = _cache_file()
    try:
        data = json.loads(cache.read_text())
        if data.get("key") == key:
            return [(str(a), str(b), str(c)) for a, b, c in data["entry_points"]]
    except (OSError, ValueError, AttributeError, TypeError):
        pass
    from importlib.metadata import entry_points

    found = [(ep.name, ep.value, f"{ep.dist.name} {ep.dist.version}" if ep.dist else "entry point")
             for ep in entry_points(group=ENTRY_POINT_GROUP)]
    try:  # best effort: a read-only home only costs the scan next time
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "entry_points": found}))
        os.replace(tmp, cache)
    except OSError:
        pass
    return found


def _load_entrypoints(pm: PluginManager) -> None:
    from importlib.metadata import EntryPoint

    for name, value, source in installed_entrypoints():
        if pm.get_plugin(name) is not None or pm.is_blocked(name):
            continue
        try:
            plugin = EntryPoint(name, value, ENTRY_POINT_GROUP).load()
        except (Exception, SystemExit) as e:  # a broken third-party plugin must not look like our bug
            raise PluginError(
                f"plugin '{name}' (from {source}) failed to import {value}: {type(e).__name__}: {e}"
            ) from e
        pm.register(plugin, name=name)
        pm.sources[name] = source


def build_registry(pm: pluggy.PluginManager) -> Registry:
    """Ask every plugin's register_* hooks for its types, noting which plugin gave each."""
    reg = Registry(pm=pm)
    for hook_name, kind in hookspecs.REGISTER_HOOKS.items():
        hook = getattr(pm.hook, hook_name)
        for impl in reversed(hook.get_hookimpls()):  # registration order
            owner = impl.plugin_name

            def register(item: Any, _kind: Any = kind, _owner: str = owner) -> None:
                reg.add(_kind, item, _owner)

            try:
                impl.function(*[{"register": register}[a] for a in impl.argnames])
            except DuplicateName as e:
                raise PluginError(str(e)) from None
            except (Exception, SystemExit) as e:
                raise PluginError(
                    f"plugin '{owner}' raised in {hook_name}: {type(e).__name__}: {e}"
                ) from e
    return reg


def call_plugin(registry: Registry | None, kind: str, name: str, fn: Any, *args: Any,
                passthrough: tuple[type[BaseException], ...] = ()) -> Any:
    """Call a registered type's method; an unexpected exception becomes a PluginError naming it
    (an allocation failure an OutOfMemory, which the runner says more of), without torch's C++ stack.

    Set CNNSPEC_DEBUG=1 to see the plugin's own traceback instead.
    """
    try:
        return fn(*args)
    except passthrough:
        raise
    except (Exception, SystemExit) as e:
        if os.environ.get("CNNSPEC_DEBUG"):
            raise
        owner = registry.owner(kind, name) if registry else "?"
        oom = out_of_memory(e)
        if oom is not None:
            raise OutOfMemory(f"{kind} type '{name}' (from plugin '{owner}'): {oom}", oom.requested, oom.amount,
                              f"{kind} type '{name}'") from e
        raise PluginError(
            f"{kind} type '{name}' (from plugin '{owner}') failed: {type(e).__name__}: {without_cpp_stack(str(e))} "
            "(set CNNSPEC_DEBUG=1 for the traceback)"
        ) from e


def load_local_plugin(ref: str, base: str | Path = ".", policy: Policy | None = None) -> ModuleType:
    """Import a plugin for one spec or run: a module name, or a ``.py`` file relative to ``base``.

    A file runs only if ``policy`` trusts its bytes (``None``: the user named it with -p); a
    module name is imported from the installed environment, never from the current folder.
    """
    from cnnspec.registry.trust import is_plugin_file, load_plugin_file, never_imported, without_current_folder

    if is_plugin_file(ref):
        return load_plugin_file(ref, (Path(base) / ref).resolve(), policy)
    refused = never_imported(ref)
    if refused:
        raise PluginError(refused)
    if policy is not None and not is_installed_plugin(ref):
        policy.check_module(ref)
    try:
        with without_current_folder():
            return importlib.import_module(ref)
    except SystemExit as e:
        raise PluginError(f"plugin {ref!r} tried to end the process while importing "
                          f"(SystemExit({e.code!r})); refused") from None
    except Exception as e:
        raise PluginError(f"plugin {ref!r} failed to import: {type(e).__name__}: {e}") from e


def is_installed_plugin(name: str) -> bool:
    """``name`` is (inside) the module of an installed distribution's ``cnnspec`` entry point:
    installing it made it a plugin, so a spec may name it without further trust."""
    for _, value, _ in installed_entrypoints():
        module = value.split(":")[0].strip()
        if name == module or name.startswith(module + ".") or module.startswith(name + "."):
            return True
    return False


def registry_with(modules: Iterable[ModuleType]) -> Registry:
    """A registry of the default plugins, entry points, and these extra plugin modules."""
    return build_registry(get_plugin_manager(extra=modules))


@lru_cache(maxsize=1)
def default_plugin_manager() -> PluginManager:
    """The process's plugin manager: default plugins plus installed entry points."""
    return get_plugin_manager()


@lru_cache(maxsize=1)
def default_registry() -> Registry:
    """The registry of the default plugin manager, built once per process."""
    return build_registry(default_plugin_manager())
