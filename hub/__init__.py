"""The Hub side: push a saved adapter checkpoint as an adapter-only repo, with its generated model card."""

from .push import push_adapter

__all__ = ["push_adapter"]
