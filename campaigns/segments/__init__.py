"""Segments: the `--where` expression language over contacts, compiled to SQL expressions.

`grammar.lark` is the language, `parser.py` reads an expression into `expression.py`'s tree (or a
one-line error with its column), `compiler.py` turns the tree into a SQLAlchemy condition on the
contact table, `saved.py` keeps named segments, and `audience.py` gives a campaign's condition.
"""
