"""Diagnostics for adapter training costs."""

import torch


def autograd_graph_size(tensor: torch.Tensor) -> int:
    """Autograd nodes reachable from `tensor`: each runs once in the backward pass from it.

    In-layer adapters use it to show that no backward work happens below their injection layer.
    """
    seen, stack = set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return len(seen)
