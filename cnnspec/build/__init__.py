"""A checked Spec to a torch.nn.Sequential: the builder and the modules it shares."""
