"""The package's version, in a module of its own so that any module can read it without importing the
package's public API (hpdm_core/__init__.py re-exports hpdm_core.api)."""

__version__ = "0.1.0"
