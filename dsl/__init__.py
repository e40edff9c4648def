"""Charter's front end: load a workflow file, validate it, compile it into an execution graph.

Kept free of imports so that `charter --version` and `import dsl.expr` stay fast.
"""

__version__ = "0.1.0"
LANGUAGE_VERSION = "1.0"
