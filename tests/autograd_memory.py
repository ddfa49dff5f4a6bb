"""What autograd really keeps for backward, to hold the layers' memory rules (LayerType.saved) to;
and the check that a builder rewrite changes no number, outputs and gradients alike."""

from __future__ import annotations

import torch

from cnnspec.spec.cost import activation_profile


def saved_bytes(model, x) -> int:
    """Bytes of the tensors autograd keeps for backward in a training forward pass on ``x``,
    each storage once, less the weights, buffers and ``x`` itself."""
    skip = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers(), x]}
    seen: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in skip:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return sum(seen.values())


def assert_kept_exact(model, spec):
    """The memory rules' kept bytes per sample are what autograd keeps: the difference between
    batches of 4 and 2, halved (so per-channel statistics that do not grow with the batch drop out)."""
    first = next((r for _, r in spec.trace.walk() if not r.children and r.params), None)
    if first is not None and first is not spec.trace.rows[0] and \
            getattr(first.component.params, "padding_mode", "zeros") in ("reflect", "replicate"):
        # layers in front of the first weights get no gradient, so torch's padding inside this
        # convolution keeps nothing; the rules model that for whole layers, not inside one
        return
    inp = spec.trace.input_shape
    model.train()
    torch.manual_seed(0)
    per_sample = (saved_bytes(model, torch.randn(4, *inp)) - saved_bytes(model, torch.randn(2, *inp))) // 2
    prof = activation_profile(spec.trace)
    assert sum(prof.kept.values()) == per_sample, (sum(prof.kept.values()), per_sample)
    assert prof.peak >= per_sample


def assert_same_numbers(model, ref, x) -> None:
    """``model`` and ``ref`` (the same weights) give equal outputs and equal gradients, bit for bit,
    for the input ``x`` and every parameter, after a backward pass of a squared-sum loss."""
    outs, grads = [], []
    for m in (model, ref):
        m.zero_grad()
        xi = x.clone().requires_grad_(True)
        out = m(xi)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append([xi.grad] + [p.grad for p in m.parameters()])
    assert torch.equal(outs[0], outs[1])
    for a, b in zip(grads[0], grads[1], strict=True):
        assert torch.equal(a, b)


def unrewritten(spec, model, monkeypatch):
    """The model as built without the relu-after-max-pooling rewrite, holding ``model``'s weights
    (loading them also checks that the rewrite kept every parameter's name)."""
    from cnnspec.build import model as build

    with monkeypatch.context() as m:
        m.setattr(build, "pooled_relus", lambda rows: [])
        ref = build.build_model(spec)
    ref.load_state_dict(model.state_dict())
    return ref
