"""Expands a spec's layer list: composites' children, ``repeat: N`` and block uses, checked in place."""

from __future__ import annotations

import dataclasses
from typing import Any

from cnnspec.errors import KeyPath, did_you_mean, path_str
from cnnspec.spec.components import Resolver
from cnnspec.spec.sections import Component
from cnnspec.spec.shapes import MAX_LAYERS, MAX_NESTING, MAX_REPEAT

# Spec syntax, not a plugin's name test: ``{..., repeat: N}`` on any layer item or block use is
# short for ``{type: repeat, times: N, layers: [{...}]}``, the composite registered under this name.
REPEAT = "repeat"
TRAINABLE = "trainable"  # ``{..., trainable: false}`` on any layer item or block use: frozen (spec.finetune)


class TooManyLayers(Exception):
    """Raised inside an expansion the moment the layers counted so far pass MAX_LAYERS."""


class TooDeep(Exception):
    """Raised inside an expansion at MAX_NESTING, once its problem is reported: nothing more to check."""


class Expander:
    """Checks layer items into Components, expanding block uses so every body layer keeps its
    place in the block's definition and the trail of uses (``Reporter.trail``) that expanded it.

    The work is bounded as it goes: ``count`` is the number of layers the items expanded so far
    stand for (repeats' copies included), and the expansion stops the moment it passes
    MAX_LAYERS, so blocks that double at each level never build their whole tree; ``depth`` is
    the nesting of composites and block uses, refused past MAX_NESTING.
    """

    def __init__(self, resolve: Resolver) -> None:
        self.resolve = resolve
        self.report = resolve.report
        self.reg = resolve.reg
        self.blocks: dict[str, Any] = {}  # name -> compiled Block, or None when its definition is bad
        self.bad_plugin_blocks: dict[str, str] = {}  # name -> what is wrong with a plugin's block
        self.count = 0  # layers expanded so far, repeats' copies counted
        self.depth = 0  # composites and block uses being expanded, one inside the other

    def layers(self, raw: list[Any]) -> list[Component] | None:
        """The spec's ``layers:``; None when any item is wrong or the model has too many layers."""
        self.count = self.depth = 0
        try:
            return self.layer_list(raw, ("layers",))
        except TooDeep:
            return None
        except TooManyLayers:
            with self.report.inside(()):
                self.report.fail(("layers",), f"layers: the model expands to more than the limit of "
                                 f"{MAX_LAYERS:,} layers (check the repeat counts and block uses)", key=True)
            return None

    def counted(self, n: int) -> None:
        """Count ``n`` more layers; stop the whole expansion once they pass the limit."""
        self.count += n
        if self.count > MAX_LAYERS:
            raise TooManyLayers

    def layer_list(self, raw: list[Any], path: KeyPath) -> list[Component] | None:
        out: list[Component] = []
        ok = True
        for i, item in enumerate(raw):
            comp = self.layer(item, path + (i,))
            ok = ok and comp is not None
            if comp is not None:
                out.append(comp)
        return out if ok else None

    def layer(self, raw: Any, path: KeyPath) -> Component | None:
        """One layer item: a layer, a composite (children checked too), a block use, or ``repeat: N`` of one."""
        if self.depth >= MAX_NESTING:
            what = "blocks" if isinstance(raw, dict) and "block" in raw else "layers"
            self.report.fail(path, f"{path_str(path)}: {what} nest more than {MAX_NESTING} levels deep (composites "
                             "and block uses, one inside another); flatten some of them", key=True)
            raise TooDeep
        self.depth += 1
        try:
            comp = self.nested(raw, path)
        finally:
            self.depth -= 1
        if comp is None:
            self.counted(1)  # a bad item counts as a layer: a body used 2**60 times fails in bounded time
        return comp

    def nested(self, raw: Any, path: KeyPath) -> Component | None:
        label = path_str(path)
        if isinstance(raw, dict) and TRAINABLE in raw:
            return self.trainable(raw, path)
        if isinstance(raw, dict) and REPEAT in raw:
            return self.repeated(raw, path)
        if isinstance(raw, dict) and "block" in raw:
            if "type" in raw:
                self.report.fail(path + ("type",), f"{label}: give either 'type' (a layer) or 'block' (a named "
                                 "block), not both", key=True)
                return None
            return self.block_use(raw, path)
        comp = self.resolve.component("layer", raw, path)
        if comp is None or not hasattr(comp.type, "trace"):
            self.counted(1)
            return comp
        before = self.count
        kids = []
        for where in comp.type.paths(comp.params):
            value = _at(raw, where, comp.params)
            items = self.layer_list(value, path + where) if isinstance(value, list) else (
                None if (one := self.layer(value, path + where)) is None else [one])
            if items is None:
                return None
            kids.append(tuple(items))
        copies = getattr(comp.type, "copies", None)  # CompositeType.copies: the child lists run this often
        inner = self.count - before
        self.counted(1 if not kids else inner * (int(copies(comp.params)) - 1) if copies is not None else 0)
        return Component(comp.name, comp.type, comp.params, path, tuple(kids), self.report.trail)

    def trainable(self, raw: dict[str, Any], path: KeyPath) -> Component | None:
        """``{..., trainable: false}`` on any layer item or block use: its parameters are frozen."""
        value = raw[TRAINABLE]
        if not isinstance(value, bool):
            self.report.fail(path + (TRAINABLE,), f"{path_str(path)}: trainable must be true or false, got {value!r}")
            return None
        comp = self.nested({k: v for k, v in raw.items() if k != TRAINABLE}, path)
        return dataclasses.replace(comp, frozen=True) if comp is not None and not value else comp

    def repeated(self, raw: dict[str, Any], path: KeyPath) -> Component | None:
        """``{..., repeat: N}``: short for ``{type: repeat, times: N, layers: [{...}]}``."""
        n = raw[REPEAT]
        where = path + (REPEAT,)
        label = path_str(path)
        if type(n) is not int:
            self.report.fail(where, f"{label}: repeat must be a whole number of copies, got {n!r}")
            return None
        if n < 1:
            self.report.fail(where, f"{label}: repeat must be at least 1, got {n}")
            return None
        if n > MAX_REPEAT:
            self.report.fail(where, f"{label}: repeat {n:,} is more than the limit of {MAX_REPEAT:,}")
            return None
        inner = {k: v for k, v in raw.items() if k != REPEAT}
        before = self.count
        child = self.layer(inner, path)
        rtype = self.reg.get("layer", REPEAT)
        if child is None or rtype is None:
            return None
        one = self.count - before
        total = n * one
        if total > MAX_LAYERS:
            self.report.fail(where, f"{label}: repeat {n:,} of {one:,} layers makes {total:,}, more "
                             f"than the limit of {MAX_LAYERS:,} layers in a model")
            return None
        self.counted(total - one)
        return Component(REPEAT, rtype, rtype.Params(times=n, layers=[inner]), path, ((child,),),
                         self.report.trail)

    def define_blocks(self, raw: dict[str, Any]) -> None:
        """Compile the spec's own ``blocks:``; problems in a definition are located there."""
        from cnnspec.spec.blocks import compile_block

        for name, body in raw.items():
            block, problems = compile_block(name, body, "spec")
            for rel, message, key in problems:
                self.report.fail(("blocks", name) + rel, f"blocks.{name}: {message}", key=key)
            self.blocks[name] = block
            self.report.block_owners[name] = "spec"

    def find_block(self, name: str) -> Any:
        """The compiled block ``name``: the spec's own, else a plugin's (compiled on first use)."""
        if name in self.blocks:
            return self.blocks[name]
        btype = self.reg.get("block", name)
        if btype is None:
            return None
        from cnnspec.spec.blocks import compile_block

        owner = self.reg.owners.get(("block", name), "?")
        block, problems = compile_block(name, {"params": btype.params, "layers": btype.layers,
                                               "description": btype.description}, owner)
        self.blocks[name] = block
        if block is not None:
            self.report.block_owners[name] = owner
        if problems:
            self.bad_plugin_blocks[name] = "; ".join(f"{path_str(p) or name}: {m}" for p, m, _ in problems)
        return block

    def block_use(self, raw: dict[str, Any], path: KeyPath) -> Component | None:
        """``{block: NAME, ...arguments}``: the block's layers, arguments substituted, checked in place."""
        from cnnspec.spec.blocks import substitute

        name = raw["block"]
        block = self.usable_block(name, path)
        if block is None:
            return None
        args_raw = {k: v for k, v in raw.items() if k != "block"}
        args = self.resolve.validate_model(block.args, args_raw, path, f"{path_str(path)} block '{name}': ")
        if args is None:
            return None
        body = substitute(block.layers, args.model_dump(mode="json"))
        outer = self.report.trail
        with self.report.inside(outer + ((name, path),)):
            kids = self.layer_list(body, ("blocks", name, "layers"))
        if kids is None:
            return None
        return Component(name, block.use_type, args, path, (tuple(kids),), outer)

    def usable_block(self, name: Any, path: KeyPath) -> Any:
        """The block a use at ``path`` names, or None after reporting why it cannot be used there."""
        label = path_str(path)
        fail = self.report.fail
        if not isinstance(name, str):
            fail(path + ("block",), f"{label}: 'block' must be a block name, got {name!r}")
            return None
        known = sorted(set(self.blocks) | set(self.reg.names("block")))
        if name not in known:
            hint = did_you_mean(name, known)
            if not hint and name in self.reg.names("layer"):
                hint = f" ('{name}' is a layer type: write {{type: {name}, ...}})"
            fail(path + ("block",), f"{label}: unknown block '{name}'" + (
                hint or (f" (known: {', '.join(known)})" if known else " (define it under 'blocks:')")))
            return None
        chain = [b for b, _ in self.report.trail]
        if name in chain:
            cycle = " -> ".join(chain[chain.index(name):] + [name])
            fail(path + ("block",), f"{label}: block '{name}' uses itself ({cycle}); blocks cannot be recursive")
            return None
        block = self.find_block(name)
        if block is None and name in self.bad_plugin_blocks:
            owner = self.reg.owners.get(("block", name), "?")
            fail(path + ("block",), f"{label}: block '{name}' (from plugin '{owner}') is invalid: "
                 f"{self.bad_plugin_blocks[name]}")
        return block  # None for a bad definition in this file: reported where it is

    def generated(self, item: Any) -> Component:
        """A layer a composite makes itself (an auto shortcut's conv): resolved without a place."""
        name, params = (item, {}) if isinstance(item, str) else (item["type"], {
            k: v for k, v in item.items() if k != "type"})
        ltype = self.reg.get("layer", name)
        if ltype is None:
            raise ValueError(f"no layer type '{name}' is registered")
        return Component(name, ltype, ltype.Params.model_validate(params), (), trail=self.report.trail)


def _at(raw: Any, where: KeyPath, params: Any) -> Any:
    """The layer list at ``where`` in a composite's item as written, else its parameter's default."""
    try:
        for part in where:
            raw = raw[part]
        return raw
    except (KeyError, IndexError, TypeError):
        value = params.model_dump(mode="json")
        for part in where:
            value = value[part]
        return value


def size(comp: Component) -> int:
    """How many layers a component stands for once repeats are expanded."""
    if not comp.children:
        return 1
    inner = sum(size(c) for kids in comp.children for c in kids)
    copies = getattr(comp.type, "copies", None)  # CompositeType.copies: repeat's times
    return inner * (copies(comp.params) if copies is not None else 1)
