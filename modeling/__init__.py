"""The remote-code bundle: configuration, model, processor and adapter modules. Imports only torch, transformers and the standard library."""
