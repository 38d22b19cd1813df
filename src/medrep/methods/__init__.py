from .base import Method
from .registry import METHODS, available_methods, build_method, get_method, method_options, register_method

__all__ = ["METHODS", "Method", "available_methods", "build_method", "get_method", "method_options", "register_method"]
