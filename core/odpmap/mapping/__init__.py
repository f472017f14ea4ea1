"""Mapping files: loading with positions, structure checks, compilation."""

from .compiler import CompiledMapping, CompiledRule, MappingCompiler

__all__ = ["CompiledMapping", "CompiledRule", "MappingCompiler"]
