"""The vipa plugin system (installed as `vipa_plugins`).

A plugin is any module or object with `@hookimpl` functions, declared in the
``vipa`` entry-point group of its distribution::

    [project.entry-points.vipa]
    my-encoder = "my_package.vipa_plugin"

Built-in encoders and fusions load through exactly that path.
"""

from vipa_plugins.hookspecs import hookimpl, hookspec

__all__ = ["hookimpl", "hookspec"]
