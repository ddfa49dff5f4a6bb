"""A Keras model's layer graph as the spec's nested layer lists.

A Sequential model is a chain. A functional model is read back from its output: a layer with
one input follows its input; a merge (Add, Concatenate, Multiply) becomes a block whose
branches all start at the merge's immediate dominator (the last tensor every path from the
input to the merge passes through), each branch the chain from there to one of the merge's
inputs. So a residual connection is ``Add`` with a ``[]`` branch, an Inception module is
``Concatenate`` with four branches, and squeeze-and-excitation is a ``gate``. Every layer must
be written exactly once: a tensor that feeds two branches of different merges cannot be
expressed by nesting, and is an error naming that layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cnnspec.errors import ToolError
from cnnspec.tools.keras_layers import CONVERTERS, FEATURE_ROLES, MERGES, Config, Layer, Unsupported, check_merge

MODELS = ("Sequential", "Functional", "Model")


class GraphError(ToolError):
    """The model's graph cannot be written as nested blocks (exit 2)."""


@dataclass
class Node:
    name: str
    cls: str
    config: Config
    inputs: list[str]


@dataclass
class Graph:
    nodes: dict[str, Node]  # Keras' order (topological)
    input: str
    output: str
    input_shape: tuple[int, ...]  # Keras' sample shape: (H, W, C) or (features,)
    kind: str  # "Sequential" or "Functional"
    name: str


def parse(model: dict[str, Any]) -> Graph:
    """The graph of a ``{"class_name": ..., "config": ...}`` model config."""
    cls, cfg = model.get("class_name"), model.get("config")
    if cls == "Sequential":
        return _sequential(cfg if isinstance(cfg, dict) else {"layers": cfg})
    if cls in ("Functional", "Model") and isinstance(cfg, dict):
        return _functional(cfg)
    raise GraphError(f"the file holds a {cls!r}, not a Sequential or functional model")


def _shape(c: Config) -> tuple[int, ...] | None:
    shape = c.get("batch_shape") or c.get("batch_input_shape")
    return tuple(shape[1:]) if shape else None


def _sequential(cfg: Config) -> Graph:
    layers = cfg.get("layers", [])
    shape = _shape(cfg) or (tuple(cfg["build_input_shape"][1:]) if cfg.get("build_input_shape") else None)
    nodes: dict[str, Node] = {}
    prev = "input"
    for i, item in enumerate(layers):
        c = item.get("config", {})
        name = str(c.get("name", f"layer_{i}"))
        if item.get("class_name") == "InputLayer":
            shape = _shape(c) or shape
            continue
        shape = shape or _shape(c)
        nodes[name] = Node(name, str(item.get("class_name")), c, [prev])
        prev = name
    if shape is None:
        raise GraphError("the Sequential model has no input shape (build it, or start it with keras.Input)")
    nodes = {"input": Node("input", "InputLayer", {}, []), **nodes}
    return Graph(nodes, "input", prev, shape, "Sequential", str(cfg.get("name", "model")))


def _tensor_names(args: Any) -> list[str]:
    """The layers whose outputs a Keras 3 call's arguments hold, in order."""
    if isinstance(args, dict):
        if args.get("class_name") == "__keras_tensor__":
            return [str(args["config"]["keras_history"][0])]
        return [n for v in args.values() for n in _tensor_names(v)]
    if isinstance(args, (list, tuple)):
        return [n for v in args for n in _tensor_names(v)]
    return []


def _inputs(item: Config) -> list[str]:
    inbound = item.get("inbound_nodes") or []
    if len(inbound) > 1:
        raise GraphError(f"layer '{item.get('name')}' ({item.get('class_name')}) is called {len(inbound)} times "
                         "(shared weights); a spec layer has its own weights")
    if not inbound:
        return []
    node = inbound[0]
    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
        return _tensor_names(node.get("args", []))
    return [str(t[0]) for t in node]  # Keras 2: [[name, node_index, tensor_index, kwargs], ...]


def _ends(v: Any) -> list[str]:
    """input_layers / output_layers: [name, 0, 0] for one, [[name, 0, 0], ...] for several."""
    if v and isinstance(v[0], str):
        return [v[0]]
    return [str(t[0]) for t in v or []]


def _functional(cfg: Config) -> Graph:
    nodes: dict[str, Node] = {}
    for item in cfg.get("layers", []):
        name = str(item.get("name") or item.get("config", {}).get("name"))
        nodes[name] = Node(name, str(item.get("class_name")), item.get("config", {}), _inputs(item))
    ins, outs = _ends(cfg.get("input_layers")), _ends(cfg.get("output_layers"))
    if len(ins) != 1 or len(outs) != 1:
        raise GraphError(f"the model has {len(ins)} inputs and {len(outs)} outputs; a spec has one of each")
    shape = _shape(nodes[ins[0]].config) if ins[0] in nodes else None
    if shape is None:
        raise GraphError(f"the input layer '{ins[0]}' has no shape")
    return Graph(nodes, ins[0], outs[0], shape, "Functional", str(cfg.get("name", "model")))


def unsupported(graph: Graph) -> list[tuple[str, str, str]]:
    """(name, class, why) of every layer that has no exact spec equivalent; why is "" for the class itself."""
    out = []
    for node in graph.nodes.values():
        if node.name == graph.input:
            continue
        try:
            if node.cls in MERGES:
                check_merge(node.cls, node.config)
            elif node.cls in MODELS:
                raise Unsupported("a nested model (save the model with its layers inline)")
            elif node.cls not in CONVERTERS:
                raise Unsupported("")
            else:
                CONVERTERS[node.cls](node.name, node.config)
        except Unsupported as e:
            out.append((node.name, node.cls, str(e)))
    return out


class _Nester:
    def __init__(self, graph: Graph) -> None:
        self.g = graph
        self.written: set[str] = set()
        self.dom = self._dominators()

    def _dominators(self) -> dict[str, set[str]]:
        """dom(n) = {n} and the layers on every path from the input to n (Keras lists layers in order)."""
        dom: dict[str, set[str]] = {}
        for node in self.g.nodes.values():
            if node.name == self.g.input:
                dom[node.name] = {node.name}
                continue
            missing = [i for i in node.inputs if i not in dom]
            if not node.inputs or missing:
                raise GraphError(f"layer '{node.name}' ({node.cls}) takes {missing or 'no'} input(s) that do not come "
                                 f"from the model's input '{self.g.input}'; a spec has one input")
            dom[node.name] = {node.name} | set.intersection(*(dom[i] for i in node.inputs))
        return dom

    def idom(self, name: str) -> str:
        """The closest layer every path to ``name`` passes through (the dominator with the most dominators)."""
        return max((d for d in self.dom[name] if d != name), key=lambda d: len(self.dom[d]))

    def chain(self, start: str, end: str) -> list[Layer]:
        """The spec layers computing ``end`` from ``start`` (which dominates it)."""
        parts: list[list[Layer]] = []
        name = end
        while name != start:
            node = self.g.nodes[name]
            if name in self.written:
                raise GraphError(f"layer '{name}' ({node.cls}): its output feeds branches of different merges; "
                                 "nested blocks (Add, Concatenate with branches) cannot express this graph")
            self.written.add(name)
            if len(node.inputs) == 1 and node.cls not in MERGES:
                made = CONVERTERS[node.cls](name, node.config)
                for layer in made:
                    layer.cls = node.cls  # the class as the model names it (MaxPool2D or MaxPooling2D, ...)
                parts.append(made)
                name = node.inputs[0]
                continue
            d = self.idom(name)
            branches = [self.chain(d, x) for x in node.inputs]
            parts.append([self.merge(node, branches)])
            name = d
        return [layer for part in reversed(parts) for layer in part]

    def merge(self, node: Node, branches: list[list[Layer]]) -> Layer:
        if node.cls != "Multiply":
            return Layer(MERGES[node.cls], {}, node.name, node.cls, children=branches, child_key="branches")
        body = [b for b in branches if b]
        if len(branches) != 2 or len(body) != 1:
            raise GraphError(f"layer '{node.name}' (Multiply): only x * f(x), one input being the other's "
                             "source, can be written (as a gate)")
        return Layer("gate", {}, node.name, "Multiply", children=body, child_key="layers")


def nest(graph: Graph) -> list[Layer]:
    """The spec's layer list; raises GraphError naming the layer where nesting fails."""
    n = _Nester(graph)
    layers = n.chain(graph.input, graph.output)
    left = [k for k in graph.nodes if k not in n.written and k != graph.input]
    if left:
        raise GraphError(f"layer '{left[0]}' ({graph.nodes[left[0]].cls}) does not lead to the model's output")
    _mark_flattened(layers, None)
    return layers


_MIXED = Layer("mixed", {}, "", "")  # branches that end in different layouts


def _mark_flattened(layers: list[Layer], state: Layer | None) -> Layer | None:
    """Give each layer whose weights are indexed by flat features (Dense, a BatchNormalization or
    Normalization of flat features) the Flatten that made them (Keras flattened channels-last);
    return the state after ``layers``: a Dense's features are in its own order."""
    for layer in layers:
        if layer.children:
            ends = [_mark_flattened(b, state) for b in layer.children]
            if layer.child_key == "branches":
                state = ends[0] if all(e is ends[0] for e in ends) else _MIXED
        elif layer.type in ("Flatten", "flatten"):
            state = layer
        elif layer.role in FEATURE_ROLES and state is not None:
            if state is _MIXED:
                raise GraphError(f"layer '{layer.keras}' ({layer.cls}): its input joins features flattened in "
                                 "different places; their channels-last order cannot be undone")
            layer.flat_from = state
            if layer.role == "dense":
                state = None
    return state
