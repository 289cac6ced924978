"""Sweep configs shipped with topkbench (package data ``topkbench._configs``)."""
