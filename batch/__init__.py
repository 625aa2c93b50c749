"""Nightly batch classification on Ray Data, reusing the cluster's model wrappers."""
